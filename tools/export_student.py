#!/usr/bin/env python
"""Export one network of a trained model (by default DUDA's small student) for deployment.

    python tools/export_student.py --config-file configs/gta2cs/duda.yaml \
        --weights output/duda_gta2cs/model_final.pth --output-dir export/ \
        [--network small_student|large_student|teacher] [--height 512 --width 1024] \
        [--format torchscript|none]

Writes ``student.pth`` (the network alone, as a ``UDASegmentor`` checkpoint) and
``student.yaml`` (a plain Detectron2 config of that ``UDASegmentor`` pointing at it), which
``tools/train_net.py --eval-only`` and ``tools/predict.py`` load like any model, and
``student.ts`` (TorchScript traced at ``--height`` x ``--width``: uint8 RGB (N, 3, H, W) of
that size in, logits at the input size out -- trace at the size the device will feed).

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
- ``student.ts`` returns a dict of three named maps at the input size, ``sem_seg`` (N, C, H, W)
  logits, ``center`` (N, 1, H, W) heat-map and ``offset`` (N, 2, H, W) ``(dy, dx)`` in input
  pixels, and carries the same ``panoptic`` entry as the extra file ``panoptic.json``
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
from typing import Dict, Optional

import torch
from torch import nn

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.engine import AtomicCheckpointer
from duda_d2.modeling.network import checkpoint_contents, read_checkpoint_keys, sub_network_config
from duda_d2.modeling.tasks import PanopticSettings, PanopticTask, panoptic_dataset_name
from duda_d2.uda.losses import upsample_logits
from duda_d2.utils.atomic_files import atomic_write_bytes
from duda_d2.utils.user_errors import UserError, exit_on_user_error

NETWORKS = ("small_student", "large_student", "teacher")
# The networks each meta-architecture has (``small_student``: its student).
HELD_NETWORKS = {"DUDA": NETWORKS, "SelfTrainingUDA": ("small_student", "teacher"),
                 "UDASegmentor": ("small_student",)}
# A panoptic network's maps, in this order; the TorchScript export returns them by name.
PANOPTIC_OUTPUTS = ("sem_seg", "center", "offset")
# What a panoptic export keeps of its data set's metadata (what post-processing, drawing and
# writing COCO-style panoptic files need; paths of the training machine are left out).
PANOPTIC_METADATA_KEYS = ("stuff_classes", "stuff_colors", "thing_classes", "thing_colors",
                          "thing_dataset_id_to_contiguous_id",
                          "stuff_dataset_id_to_contiguous_id", "label_divisor", "ignore_label")
# The entry of student.pth, and the extra file of student.ts, holding it.
PANOPTIC_KEY, TORCHSCRIPT_PANOPTIC_FILE = "panoptic", "panoptic.json"
# The metadata name a panoptic export's metadata is registered under when its model is built.
EXPORTED_PANOPTIC_DATASET = "__duda_exported_panoptic__"


class DeployableSegmenter(nn.Module):
    """Pixel normalisation + network + upsampling: what a deployed model runs."""

    def __init__(self, network: nn.Module, pixel_mean, pixel_std):
        super().__init__()
        self.network = network
        self.register_buffer("pixel_mean", torch.as_tensor(pixel_mean).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.as_tensor(pixel_std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return upsample_logits(self.network(x)["sem_seg"], images.shape[-2:])


class DeployablePanopticSegmenter(DeployableSegmenter):
    """A panoptic network's three maps at the input size, by name (``PANOPTIC_OUTPUTS``):
    semantic logits, centre heat-map, offsets ``(dy, dx)`` in input pixels (bilinear resizing
    alone keeps them right: the network gives them in input pixels already)."""

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = (images.float() - self.pixel_mean) / self.pixel_std
        maps = self.network(x)
        return {name: upsample_logits(maps[name], images.shape[-2:])
                for name in PANOPTIC_OUTPUTS}


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
        out = sub_network_config(cfg, cfg.MODEL.DUDA.LARGE_NETWORK,
                                 cfg.MODEL.DUDA.LARGE_NETWORK_OPTS, "MODEL.DUDA.LARGE_NETWORK")
    out.defrost()
    out.MODEL.META_ARCHITECTURE = "UDASegmentor"
    out.MODEL.BACKBONE.WEIGHTS = ""
    return out


def export(config_file: str, weights: str, output_dir: str, network: str = "small_student",
           size=(512, 1024), fmt: str = "torchscript", opts=()) -> dict:
    """Write student.pth / student.yaml (/ student.ts); returns their paths."""
    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu",
                                                 "MODEL.BACKBONE.WEIGHTS", ""])
    if cfg.MODEL.META_ARCHITECTURE == "DUDA":
        cfg.MODEL.DUDA.LARGE_NETWORK_OPTS = list(cfg.MODEL.DUDA.LARGE_NETWORK_OPTS) + [
            "MODEL.BACKBONE.WEIGHTS", ""]
    # The chosen network is the one the model evaluates when told so.
    arch = cfg.MODEL.META_ARCHITECTURE
    held = HELD_NETWORKS.get(arch, ("small_student",))
    if arch == "DUDA":
        cfg.MODEL.DUDA.INFERENCE_NETWORK = network
    else:
        cfg.MODEL.UDA.INFERENCE_NETWORK = "teacher" if network == "teacher" else "student"
    # Re-exporting an export: its own panoptic metadata (its data set may not be registered).
    info = read_panoptic_info(weights) if cfg.MODEL.TASK == "panoptic" else None
    build_cfg = with_exported_panoptic_metadata(cfg, info)
    model = build_model(build_cfg)
    checkpointer = AtomicCheckpointer(model, weights_key="--weights")
    checkpointer.load(weights)  # a missing or unreadable file: its own error
    chosen = model.inference_network().eval()
    missing = () if network not in held else checkpointer.missing_tensors(chosen)
    if network not in held or missing:
        why = (f"{config_file} builds a {arch}, which has no {network} (it has "
               f"{', '.join(held)})" if network not in held else
               f"'{weights}' holds no weights for the {network} ({len(missing)} of its "
               f"{len(chosen.state_dict())} tensors missing, e.g. {missing[0]})")
        raise UserError(f"cannot export the {network}: {why}. The file holds "
                        f"{checkpoint_contents(read_checkpoint_keys(weights, '--weights'))}; "
                        f"export one of those with --network and the config it was trained "
                        f"with")
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
    if fmt == "torchscript":
        panoptic = PANOPTIC_KEY in contents
        kind = DeployablePanopticSegmenter if panoptic else DeployableSegmenter
        deployable = kind(chosen, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD).eval()
        example = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
        with torch.no_grad():  # strict=False: a dict of named maps is the panoptic output
            traced = torch.jit.trace(deployable, example, check_trace=False, strict=not panoptic)
        extra = ({TORCHSCRIPT_PANOPTIC_FILE: json.dumps(contents[PANOPTIC_KEY])} if panoptic
                 else {})
        paths["torchscript"] = os.path.join(output_dir, "student.ts")
        atomic_write_bytes(paths["torchscript"],
                           lambda f: torch.jit.save(traced, f, _extra_files=extra))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="checkpoint written by train_net.py")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--network", choices=NETWORKS, default="small_student")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--format", choices=["torchscript", "none"], default="torchscript")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors a user can fix (also DUDA_DEBUG=1)")
    args = parser.parse_args(argv)
    try:
        paths = exit_on_user_error(lambda: export(
            args.config_file, args.weights, args.output_dir, args.network,
            (args.height, args.width), args.format, args.opts), debug=args.debug)
    except SystemExit as error:  # the message is printed
        return error.code
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
