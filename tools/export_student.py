#!/usr/bin/env python
"""Export one network of a trained model (by default DUDA's small student) for deployment.

    python tools/export_student.py --config-file configs/gta2cs/duda.yaml \
        --weights output/duda_gta2cs/model_final.pth --output-dir export/ \
        [--network small_student|large_student|teacher] [--format onnx torchscript|none] \
        [--int8 [--calibration-dataset NAME] [--calibration-images 300]]

Writes ``student.pth`` (the network alone, as a ``UDASegmentor`` checkpoint) and
``student.yaml`` (a plain Detectron2 config of that ``UDASegmentor`` pointing at it), which
``tools/train_net.py --eval-only`` and ``tools/predict.py`` load like any model, and the
deployment files:

- ``student.onnx`` (default; ``duda_d2.deploy.onnx_export``): exported through
  ``torch.export`` at opset 18 with a symbolic height and width, so one file serves every image
  size. Input ``image``: uint8 RGB (N, 3, H, W); output ``sem_seg``: float logits (N, C, H, W)
  at the input size. Normalisation and upsampling are inside. Its metadata
  (``metadata_props["duda_d2"]``, JSON) holds the class names and colours, the pixel
  statistics and the output names. Run it with ONNX Runtime (README, "Deploy").
- ``student_int8.onnx`` (``--int8``): ONNX Runtime's static int8 quantisation (QDQ, per-channel
  weights), calibrated on ``--calibration-images`` images of ``--calibration-dataset`` (default:
  the config's target training set; only images are read, no labels).
- ``student.ts`` (``--format torchscript``): a TorchScript trace at ``--height`` x ``--width``,
  for libtorch users. TorchScript is deprecated in PyTorch 2 and a trace fixes the image size,
  which is why ONNX replaced it as the default.

A panoptic network (``MODEL.TASK panoptic``) is exported with everything its post-processing
needs, so that a reloaded export gives the same panoptic segmentation without the training
data set being registered:

- ``student.pth`` holds, next to ``model``, a ``panoptic`` entry: ``settings`` (every number of
  ``PanopticSettings``: ``thing_ids``, ``label_divisor``, ``center_threshold``, ``nms_kernel``,
  ``top_k``, ``stuff_area``, ``stuff_area_reference``, ... as the model used them), ``metadata``
  (the training set's class names and colours, ``thing_dataset_id_to_contiguous_id``,
  ``stuff_dataset_id_to_contiguous_id``, ``label_divisor``, ``ignore_label``) and ``outputs``.
  ``tools/predict.py`` (and a re-export) registers that metadata before building the model;
  ``student.yaml`` carries the same numbers as ``MODEL.PANOPTIC_DEEPLAB`` / ``INPUT`` keys.
- ``student.onnx`` has three outputs and ``student.ts`` returns a dict of three maps, all at
  the input size: ``sem_seg`` (N, C, H, W) logits, ``center`` (N, 1, H, W) heat-map and
  ``offset`` (N, 2, H, W) ``(dy, dx)`` in input pixels. Both carry the same ``panoptic`` entry:
  the ONNX file in its metadata, the TorchScript file as the extra file ``panoptic.json``
  (``torch.jit.load(path, _extra_files={"panoptic.json": ""})``). In Python,
  ``PanopticTask(num_classes=C, settings=panoptic_settings(info)).postprocess(maps_of_one_image,
  (H, W), H, W)["panoptic_seg"][0]`` turns them into the panoptic ids the model gives
  (``train_id * label_divisor + k`` for things, ``train_id * label_divisor`` for stuff, -1 void).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence, Tuple, Union

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from tqdm import tqdm
from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.engine import AtomicCheckpointer
from duda_d2.deploy.deployable import (  # noqa: F401  (re-exported for the tools' users)
    PANOPTIC_OUTPUTS, DeployablePanopticSegmenter, DeployableSegmenter, deployable_network,
    output_names)
from duda_d2.deploy.onnx_export import export_onnx
from duda_d2.deploy.quantize import CALIBRATION_METHODS, QuantisationSettings, quantize_int8
from duda_d2.deploy.quantize import calibration_images as target_calibration_images
from duda_d2.modeling.meta_arch.duda import large_network_opts
from duda_d2.modeling.network import checkpoint_contents, read_checkpoint_keys, sub_network_config
from duda_d2.modeling.tasks import PanopticSettings, PanopticTask, panoptic_dataset_name
from duda_d2.utils.atomic_files import atomic_write_bytes
from duda_d2.utils.user_errors import UserError, exit_on_user_error

NETWORKS = ("small_student", "large_student", "teacher")
# The networks each meta-architecture has (``small_student``: its student).
HELD_NETWORKS = {"DUDA": NETWORKS, "SelfTrainingUDA": ("small_student", "teacher"),
                 "UDASegmentor": ("small_student",)}
# What a panoptic export keeps of its data set's metadata (what post-processing, drawing and
# writing COCO-style panoptic files need; paths of the training machine are left out).
PANOPTIC_METADATA_KEYS = ("stuff_classes", "stuff_colors", "thing_classes", "thing_colors",
                          "thing_dataset_id_to_contiguous_id",
                          "stuff_dataset_id_to_contiguous_id", "label_divisor", "ignore_label")
# The entry of student.pth, and the extra file of student.ts, holding it.
PANOPTIC_KEY, TORCHSCRIPT_PANOPTIC_FILE = "panoptic", "panoptic.json"
# The metadata name a panoptic export's metadata is registered under when its model is built.
EXPORTED_PANOPTIC_DATASET = "__duda_exported_panoptic__"


# ---------------------------------------------------------------------- panoptic settings
def panoptic_export_info(task: PanopticTask, metadata) -> dict:
    """What a panoptic export carries: the task's settings, its data set's metadata (only the
    ``PANOPTIC_METADATA_KEYS`` it has) and the names of the network's maps; plain Python
    values (lists, ints, floats, strings), so it is also written as JSON."""
    settings = {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(task.settings).items()}
    meta = {}
    for key in PANOPTIC_METADATA_KEYS:
        value = metadata.get(key, None)
        if isinstance(value, dict):
            value = {int(k): int(v) for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            value = [list(v) if isinstance(v, (list, tuple)) else v for v in value]
        if value is not None:
            meta[key] = value
    return {"settings": settings, "metadata": meta, "outputs": list(PANOPTIC_OUTPUTS)}


def normalise_panoptic_info(info: dict) -> dict:
    """``info`` as ``panoptic_export_info`` made it, also after a JSON round trip (which turns
    the id maps' keys into strings)."""
    meta = dict(info["metadata"])
    for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id"):
        if key in meta:
            meta[key] = {int(k): int(v) for k, v in meta[key].items()}
    for key in ("stuff_colors", "thing_colors"):
        if key in meta:
            meta[key] = [tuple(c) for c in meta[key]]
    return {**info, "metadata": meta}


def panoptic_settings(info: dict) -> PanopticSettings:
    """The ``PanopticSettings`` an export's ``panoptic`` entry holds."""
    fields = {f.name for f in dataclasses.fields(PanopticSettings)}
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in info["settings"].items() if k in fields}
    return PanopticSettings(**values)


def read_panoptic_info(weights: str) -> Optional[dict]:
    """The ``panoptic`` entry of an exported ``student.pth`` (None for any other checkpoint:
    a training run's checkpoint relies on its registered data sets). A file that does not
    exist or cannot be read is left to the checkpointer, which names it."""
    if not weights or not os.path.isfile(weights) or not weights.endswith(".pth"):
        return None
    try:
        try:
            checkpoint = torch.load(weights, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # a legacy (not zip) file cannot be memory-mapped
            checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 -- reported by AtomicCheckpointer.load with its name
        return None
    info = checkpoint.get(PANOPTIC_KEY) if isinstance(checkpoint, dict) else None
    return normalise_panoptic_info(info) if info else None


def read_torchscript_panoptic_info(path: str) -> dict:
    """The ``panoptic`` entry a panoptic ``student.ts`` carries (``panoptic.json``)."""
    extra = {TORCHSCRIPT_PANOPTIC_FILE: ""}
    torch.jit.load(path, map_location="cpu", _extra_files=extra)
    if not extra[TORCHSCRIPT_PANOPTIC_FILE]:
        raise ValueError(f"'{path}' carries no {TORCHSCRIPT_PANOPTIC_FILE}: it is not the "
                         f"TorchScript export of a panoptic network")
    return normalise_panoptic_info(json.loads(extra[TORCHSCRIPT_PANOPTIC_FILE]))


def with_exported_panoptic_metadata(cfg, info: Optional[dict]):
    """``cfg`` to build a model with an export's panoptic metadata: the metadata registered
    as ``EXPORTED_PANOPTIC_DATASET`` (replacing what an earlier export registered there) and
    the config's data sets pointed at it, so the task gets the export's thing classes and label
    divisor whatever is registered on this machine. ``cfg`` itself when ``info`` is None."""
    if info is None:
        return cfg
    if EXPORTED_PANOPTIC_DATASET in MetadataCatalog.list():
        MetadataCatalog.remove(EXPORTED_PANOPTIC_DATASET)
    MetadataCatalog.get(EXPORTED_PANOPTIC_DATASET).set(**info["metadata"])
    out = cfg.clone()
    out.defrost()
    out.DATASETS.SOURCE_TRAIN = ()
    out.DATASETS.TRAIN = (EXPORTED_PANOPTIC_DATASET,)
    out.DATASETS.TEST = (EXPORTED_PANOPTIC_DATASET,)
    return out


def network_config(cfg, network: str):
    """The config describing the chosen network as a plain ``UDASegmentor``."""
    if network == "small_student" or cfg.MODEL.META_ARCHITECTURE != "DUDA":
        out = cfg.clone()
    else:  # the large pair is described by MODEL.DUDA.LARGE_NETWORK
        out = sub_network_config(cfg, cfg.MODEL.DUDA.LARGE_NETWORK, large_network_opts(cfg),
                                 "MODEL.DUDA.LARGE_NETWORK")
    out.defrost()
    out.MODEL.META_ARCHITECTURE = "UDASegmentor"
    out.MODEL.BACKBONE.WEIGHTS = ""
    return out


FORMATS = ("onnx", "torchscript", "none")
# Target-domain training images the int8 ranges are calibrated on, by default.
CALIBRATION_IMAGES = 300


def class_metadata(cfg) -> dict:
    """The class names and colours of the config's first test set, if it is registered."""
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TARGET_TRAIN)
    if not names or names[0] not in MetadataCatalog.list():
        return {}
    meta = MetadataCatalog.get(names[0])
    out = {}
    if meta.get("stuff_classes", None):
        out["classes"] = list(meta.stuff_classes)
    if meta.get("stuff_colors", None):
        out["colors"] = [list(c) for c in meta.stuff_colors]
    return out


def parse_formats(fmt: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """``fmt`` (a name or a list of names from ``FORMATS``) as a tuple; ``none`` alone means
    the checkpoint and config only."""
    formats = (fmt,) if isinstance(fmt, str) else tuple(fmt)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format {' '.join(formats)}: unknown format(s) {unknown}; use "
                        f"one or more of {', '.join(FORMATS[:-1])}, or none")
    return tuple(f for f in formats if f != "none")


def export_config(config_file: str, network: str = "small_student", opts=(),
                  weights: Optional[str] = None):
    """The training config, set to evaluate ``network`` on the CPU, with nothing loaded from
    files the trained checkpoint replaces anyway (ImageNet weights, the large pair's starting
    point): they need not exist on the exporting machine. A network the model lacks is a
    ``UserError`` (naming what ``weights``, if given, holds)."""
    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu",
                                                 "MODEL.BACKBONE.WEIGHTS", ""])
    arch = cfg.MODEL.META_ARCHITECTURE
    held = HELD_NETWORKS.get(arch, ("small_student",))
    if network not in held:
        holds = (f". The file holds "
                 f"{checkpoint_contents(read_checkpoint_keys(weights, '--weights'))}; export "
                 f"one of those with --network and the config it was trained with"
                 if weights and os.path.isfile(weights) else "")
        raise UserError(f"cannot export the {network}: {config_file} builds a {arch}, which "
                        f"has no {network} (it has {', '.join(held)}){holds}")
    if arch == "DUDA":
        cfg.MODEL.DUDA.LARGE_NETWORK_OPTS = list(cfg.MODEL.DUDA.LARGE_NETWORK_OPTS) + [
            "MODEL.BACKBONE.WEIGHTS", ""]
        cfg.MODEL.DUDA.LARGE_NETWORK_WEIGHTS = ""
        cfg.MODEL.DUDA.INFERENCE_NETWORK = network
    else:
        cfg.MODEL.UDA.INFERENCE_NETWORK = "teacher" if network == "teacher" else "student"
    return cfg


def load_network(cfg, config_file: str, weights: str, network: str):
    """(config the model was built with, the model, its ``network`` in eval mode) with the
    trained ``weights`` loaded; a file without that network's tensors is a ``UserError``."""
    # Re-exporting an export: its own panoptic metadata (its data set may not be registered).
    info = read_panoptic_info(weights) if cfg.MODEL.TASK == "panoptic" else None
    build_cfg = with_exported_panoptic_metadata(cfg, info)
    model = build_model(build_cfg)
    checkpointer = AtomicCheckpointer(model, weights_key="--weights")
    checkpointer.load(weights)  # a missing or unreadable file: its own error
    chosen = model.inference_network().eval()
    missing = checkpointer.missing_tensors(chosen)
    if missing:
        raise UserError(f"cannot export the {network}: '{weights}' holds no weights for the "
                        f"{network} ({len(missing)} of its {len(chosen.state_dict())} tensors "
                        f"missing, e.g. {missing[0]}). The file holds "
                        f"{checkpoint_contents(read_checkpoint_keys(weights, '--weights'))}; "
                        f"export one of those with --network and the config it was trained "
                        f"with")
    return build_cfg, model, chosen


def export(config_file: str, weights: str, output_dir: str, network: str = "small_student",
           size=(512, 1024), fmt="onnx", opts=(), int8: bool = False,
           calibration_dataset: str = "", calibration_images: int = CALIBRATION_IMAGES,
           calibration_method: str = "minmax") -> dict:
    """Write student.pth / student.yaml (+ student.onnx, student_int8.onnx, student.ts as
    ``fmt`` and ``int8`` ask); returns their paths."""
    formats = parse_formats(fmt)
    if int8 and "onnx" not in formats:
        formats = ("onnx",) + formats
    settings = QuantisationSettings(method=calibration_method) if int8 else None
    if int8 and calibration_images < 1:
        raise UserError(f"--calibration-images {calibration_images}: give at least 1 "
                        f"(a few hundred target-domain images)")
    cfg = export_config(config_file, network, opts, weights)
    if int8:
        calibration_dataset = calibration_dataset or next(iter(cfg.DATASETS.TARGET_TRAIN), "")
        if not calibration_dataset:
            raise UserError(f"--int8 needs target-domain images to calibrate on: "
                            f"{config_file} names no DATASETS.TARGET_TRAIN; pass "
                            f"--calibration-dataset NAME (a registered data set; only its "
                            f"images are read)")
        if calibration_dataset not in DatasetCatalog.list():
            raise UserError(f"--calibration-dataset '{calibration_dataset}' is not a "
                            f"registered data set (e.g. synthetic_uda_target_train, "
                            f"cityscapes_fine_sem_seg_train)")
    build_cfg, model, chosen = load_network(cfg, config_file, weights, network)
    os.makedirs(output_dir, exist_ok=True)
    paths = {"weights": os.path.join(output_dir, "student.pth"),
             "config": os.path.join(output_dir, "student.yaml")}
    state = {f"network.{k}": v for k, v in chosen.state_dict().items()}
    contents = {"model": state}
    if isinstance(model.task, PanopticTask):
        contents[PANOPTIC_KEY] = panoptic_export_info(
            model.task, MetadataCatalog.get(panoptic_dataset_name(build_cfg)))
    atomic_write_bytes(paths["weights"], lambda f: torch.save(contents, f))
    out_cfg = network_config(cfg, network)
    out_cfg.MODEL.WEIGHTS = os.path.abspath(paths["weights"])
    atomic_write_bytes(paths["config"], lambda f: f.write(out_cfg.dump().encode()))
    panoptic = PANOPTIC_KEY in contents
    deployable = deployable_network(chosen, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, panoptic)
    example = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
    if "torchscript" in formats:
        paths["torchscript"] = os.path.join(output_dir, "student.ts")
        write_torchscript(deployable, example, paths["torchscript"],
                          contents.get(PANOPTIC_KEY))
    if "onnx" in formats:
        metadata = {"network": network, "config": os.path.basename(config_file),
                    "channels": cfg.INPUT.FORMAT,
                    "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
                    "pixel_std": list(cfg.MODEL.PIXEL_STD), **class_metadata(build_cfg)}
        if panoptic:
            metadata[PANOPTIC_KEY] = contents[PANOPTIC_KEY]
        paths["onnx"] = os.path.join(output_dir, "student.onnx")
        export_onnx(deployable, paths["onnx"], output_names(panoptic), metadata,
                    static_size=size)
    if int8:
        paths["onnx_int8"] = os.path.join(output_dir, "student_int8.onnx")
        images = target_calibration_images(cfg, calibration_dataset, calibration_images)
        report = quantize_int8(paths["onnx"], paths["onnx_int8"],
                               tqdm(images, total=calibration_images, unit="image",
                                    desc=f"int8 calibration on {calibration_dataset}"),
                               settings)
        print(f"int8: calibrated on {report['calibration_images']} images of "
              f"{calibration_dataset} ({settings.method})")
    return paths


def write_torchscript(deployable, example: torch.Tensor, path: str,
                      panoptic_info: Optional[dict]) -> None:
    """The TorchScript trace of ``deployable`` at ``example``'s size (a panoptic network
    carries its ``panoptic.json``). Kept for libtorch (C++) users: TorchScript is deprecated in
    PyTorch 2 and the trace fixes the image size, so ONNX is the default format."""
    with torch.no_grad():  # strict=False: a dict of named maps is the panoptic output
        traced = torch.jit.trace(deployable, example, check_trace=False,
                                 strict=panoptic_info is None)
    extra = {TORCHSCRIPT_PANOPTIC_FILE: json.dumps(panoptic_info)} if panoptic_info else {}
    atomic_write_bytes(path, lambda f: torch.jit.save(traced, f, _extra_files=extra))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="checkpoint written by train_net.py")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--network", choices=NETWORKS, default="small_student")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["onnx"],
                        help="deployment files besides student.pth/.yaml: onnx (student.onnx, "
                             "any image size), torchscript (student.ts, traced at "
                             "--height x --width), or none")
    parser.add_argument("--int8", action="store_true",
                        help="also write student_int8.onnx, quantised with ONNX Runtime "
                             "(static, calibrated on target-domain training images)")
    parser.add_argument("--calibration-dataset", default="",
                        help="registered data set whose images calibrate the int8 ranges "
                             "(default: the config's first DATASETS.TARGET_TRAIN; labels are "
                             "not read)")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors a user can fix (also DUDA_DEBUG=1)")
    args = parser.parse_args(argv)
    try:
        paths = exit_on_user_error(lambda: export(
            args.config_file, args.weights, args.output_dir, args.network,
            (args.height, args.width), args.format, args.opts, args.int8,
            args.calibration_dataset, args.calibration_images, args.calibration_method),
            debug=args.debug)
    except SystemExit as error:  # the message is printed
        return error.code
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
