#!/usr/bin/env python
"""Convert whole trained segmentation models between this project and other code bases.

    python tools/convert_model.py from-huggingface MODEL_DIR OUTPUT_DIR [--overwrite]
    python tools/convert_model.py to-huggingface --config-file CFG --weights student.pth \
        OUTPUT_DIR [--network small_student|large_student|teacher] [--overwrite]
    python tools/convert_model.py from-mmseg CHECKPOINT OUTPUT_DIR [--which auto|model|ema_model]
        [--aspp-dilations 1 6 12 18] [--trust-pickle] [--overwrite]

``from-huggingface`` reads a Hugging Face ``SegformerForSemanticSegmentation`` folder
(``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``, as ``save_pretrained`` writes
it; or its weight file) and writes ``OUTPUT_DIR/model.pth`` (``{"model": {"network.<key>":
tensor}, "source": ..., "__author__": "duda_d2.convert_model", ...}``) and
``OUTPUT_DIR/model.yaml``, a complete ``UDASegmentor`` config whose ``MODEL.WEIGHTS`` points at
it -- like an export of tools/export_student.py: ``tools/train_net.py --eval-only
--config-file OUTPUT_DIR/model.yaml`` and ``tools/predict.py`` load it, and ``model.pth`` /
``model.yaml`` serve as ``MODEL.DUDA.EXTRA_TEACHER_WEIGHTS`` / ``EXTRA_TEACHER_CONFIGS``.

``to-huggingface`` loads one network of a trained model as tools/export_student.py does
(``--network``, default the small student) and writes a folder that
``SegformerForSemanticSegmentation.from_pretrained(OUTPUT_DIR)`` and
``SegformerImageProcessor.from_pretrained(OUTPUT_DIR)`` load (this project's pixel
normalisation, no resizing). Only MiT + SegFormerHead networks have a Hugging Face form.

``from-mmseg`` reads a DAFormer release (mmseg ``state_dict``: ``backbone.*`` /
``decode_head.*``, or a whole DACS run with ``model.*`` / ``ema_model.*`` / ``imnet_model.*``;
MiT + DAFormer head) and writes the same two files; ``model.pth`` also initialises DUDA's
large pair (``MODEL.DUDA.LARGE_NETWORK_WEIGHTS``). HRDA/MIC multi-resolution checkpoints are
refused. The key mapping is in ``duda_d2.modeling.interchange.mmseg_daformer``.

Every subcommand refuses an output folder that holds files unless ``--overwrite``; nothing is
written when a conversion fails, and files are written atomically. Errors a user can fix end
with one ``error: ...`` line (exit code 1); ``--debug`` shows their traceback. The logic is in
``duda_d2.modeling.interchange``. SegFormer/MiT weights are under NVIDIA's non-commercial
licence, which travels with converted weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from duda_d2 import load_config
from duda_d2.modeling.network import REPO_ROOT
from duda_d2.utils.atomic_files import atomic_write_bytes
from duda_d2.utils.user_errors import UserError, exit_on_user_error

AUTHOR = "duda_d2.convert_model"
# The network description converted networks' model.yaml starts from (its MODEL keys are
# overridden by the converter; the rest -- pixel statistics, solver -- is the project's).
DEFAULT_NETWORK_CONFIG = os.path.join(REPO_ROOT, "configs", "networks", "mit_b0_segformer.yaml")
NETWORKS = ("small_student", "large_student", "teacher")


@dataclass(frozen=True)
class Subcommand:
    """One conversion: its help line, its own arguments (the common ``OUTPUT_DIR``,
    ``--overwrite`` and ``--debug`` are added by ``build_parser``) and what it runs (returns
    the exit code; raises ``UserError`` for what the user can fix)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------------------- shared helpers
def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse an output folder holding files unless ``overwrite`` (see the interchange
    module); called before any subcommand runs."""
    from duda_d2.modeling.interchange.huggingface_segformer import check_output_dir as check

    check(output_dir, overwrite)


def converted_config(overrides: Mapping[str, Any], weights: str,
                     base_config: str = DEFAULT_NETWORK_CONFIG):
    """The ``UDASegmentor`` config of a converted network: ``base_config`` with the
    converter's ``overrides`` (config key -> value), ``MODEL.WEIGHTS`` = ``weights`` (made
    absolute) and no ImageNet backbone weights to load."""
    cfg = load_config(base_config)
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    cfg.MODEL.META_ARCHITECTURE = "UDASegmentor"
    cfg.MODEL.BACKBONE.WEIGHTS = ""
    cfg.MODEL.WEIGHTS = os.path.abspath(weights)
    return cfg


def check_network_fits(cfg, state: Mapping[str, torch.Tensor]) -> None:
    """The network ``cfg`` builds (on the meta device: shapes only) has exactly the keys and
    shapes of ``state``: what is written then loads. A converter's bug, not the user's."""
    from duda_d2.modeling.network import build_segmentation_network

    with torch.device("meta"):
        network = build_segmentation_network(cfg)
    own = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if own != got:
        diff = sorted(set(own) ^ set(got)) + sorted(k for k in own if k in got
                                                    and own[k] != got[k])
        raise AssertionError(f"converted tensors do not fit the config's network: {diff[:10]}")


def write_converted_network(output_dir: str, state: Mapping[str, torch.Tensor],
                            overrides: Mapping[str, Any], source: str,
                            extra: Optional[Mapping[str, Any]] = None,
                            base_config: str = DEFAULT_NETWORK_CONFIG) -> Dict[str, str]:
    """Write ``model.pth`` (``{"model": {"network.<key>": tensor}, "source", "__author__",
    **extra}``) and ``model.yaml`` (``converted_config``) into ``output_dir``, atomically,
    the config last; returns their paths. Every ``from-*`` subcommand ends here."""
    paths = {"weights": os.path.join(output_dir, "model.pth"),
             "config": os.path.join(output_dir, "model.yaml")}
    cfg = converted_config(overrides, paths["weights"], base_config)
    check_network_fits(cfg, state)
    contents = {"model": {f"network.{k}": v for k, v in state.items()},
                "source": source, "__author__": AUTHOR, **(extra or {})}
    atomic_write_bytes(paths["weights"], lambda f: torch.save(contents, f))
    atomic_write_bytes(paths["config"], cfg.dump().encode())
    return paths


def print_usage_hints(paths: Mapping[str, str]) -> None:
    """How to use a converted network (evaluation, prediction, as a DUDA teacher)."""
    print(f"evaluate: python tools/train_net.py --eval-only --config-file {paths['config']} "
          f"DATASETS.TEST \"('<dataset>',)\"")
    print(f"predict:  python tools/predict.py --config-file {paths['config']} "
          f"--input IMAGES --output OUT")
    print(f"teacher:  MODEL.DUDA.EXTRA_TEACHER_CONFIGS \"['{paths['config']}']\" "
          f"MODEL.DUDA.EXTRA_TEACHER_WEIGHTS \"['{paths['weights']}']\"")


def _export_student_module():
    """tools/export_student.py as a module (it is a script, not a package member)."""
    if "export_student" in sys.modules:
        return sys.modules["export_student"]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_student.py")
    spec = importlib.util.spec_from_file_location("export_student", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["export_student"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- from-huggingface
def _add_from_huggingface(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="Hugging Face SegformerForSemanticSegmentation folder "
                             "(config.json + model.safetensors or pytorch_model.bin), or its "
                             "weight file")


def run_from_huggingface(args: argparse.Namespace) -> int:
    """Import ``args.model_dir`` and write model.pth / model.yaml; print a summary."""
    from duda_d2.modeling.interchange.huggingface_segformer import (
        LICENCE_NOTE,
        import_huggingface_segformer,
    )

    imported = import_huggingface_segformer(args.model_dir)
    paths = write_converted_network(
        args.output_dir, imported.state, imported.config_overrides(), imported.source,
        extra={"class_names": imported.class_names, "variant": imported.variant,
               "licence": LICENCE_NOTE})
    names = ", ".join(imported.class_names[:6]) + (", ..." if imported.num_classes > 6 else "")
    print(f"read {imported.source} (Hugging Face SegformerForSemanticSegmentation)")
    print(f"network: MiT-{imported.variant} + SegFormerHead (embed {imported.embed_dim}), "
          f"{imported.num_classes} classes: {names}")
    print(imported.report.summary())
    print(f"wrote {paths['weights']} ({len(imported.state)} tensors) and {paths['config']}")
    print_usage_hints(paths)
    print(LICENCE_NOTE)
    return 0


# ---------------------------------------------------------------------------- to-huggingface
def _add_to_huggingface(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", required=True,
                        help="the config the model was trained with (or an export's .yaml)")
    parser.add_argument("--weights", required=True,
                        help="checkpoint of tools/train_net.py or tools/export_student.py")
    parser.add_argument("--network", choices=NETWORKS, default="small_student",
                        help="which network of the model to export (default: small_student, "
                             "the only one of a UDASegmentor)")


def check_config_exportable(net_cfg, config_file: str, network: str) -> None:
    """Refuse, before loading anything, a network whose config is not MiT + SegFormerHead
    (semantic, RGB input): transformers' SegFormer cannot hold it."""
    model = net_cfg.MODEL
    what = []
    if model.TASK != "semantic":
        what.append(f"MODEL.TASK {model.TASK!r} (an instance head)")
    if model.BACKBONE.NAME != "build_mit_backbone":
        what.append(f"backbone {model.BACKBONE.NAME}")
    if model.SEM_SEG_HEAD.NAME != "SegFormerHead":
        what.append(f"head {model.SEM_SEG_HEAD.NAME}")
    if what:
        raise UserError(
            f"cannot export the {network} of {config_file} to Hugging Face: it has "
            f"{', '.join(what)}, and transformers' SegformerForSemanticSegmentation is exactly a "
            f"MiT backbone (build_mit_backbone) + SegFormerHead for semantic segmentation. "
            f"Export it with tools/export_student.py (student.pth / student.yaml / "
            f"TorchScript) instead")
    if net_cfg.INPUT.FORMAT != "RGB":
        raise UserError(f"cannot export the {network} of {config_file}: it reads "
                        f"INPUT.FORMAT {net_cfg.INPUT.FORMAT} images, Hugging Face's image "
                        f"processor gives RGB. Export it with tools/export_student.py instead")


def load_trained_network(config_file: str, weights: str, network: str = "small_student",
                         opts: Sequence[str] = ()):
    """(config of the whole model, config describing the chosen network as a UDASegmentor,
    the network in eval mode on CPU), loaded the way tools/export_student.py loads it (its
    helpers; a network the model lacks or the file does not hold is a ``UserError``)."""
    es = _export_student_module()
    cfg = es.export_config(config_file, network, opts, weights)
    net_cfg = es.network_config(cfg, network)
    check_config_exportable(net_cfg, config_file, network)
    _, _, chosen = es.load_network(cfg, config_file, weights, network)
    return cfg, net_cfg, chosen


def class_names_of(cfg, num_classes: int) -> List[str]:
    """The classes of the model's test set (``MetadataCatalog``'s ``stuff_classes``) when it
    has as many as the network; ``class_0``... otherwise."""
    from detectron2.data import MetadataCatalog

    if cfg.DATASETS.TEST:
        names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("stuff_classes", None)
        if names is not None and len(names) == num_classes:
            return [str(n) for n in names]
    return [f"class_{i}" for i in range(num_classes)]


def run_to_huggingface(args: argparse.Namespace) -> int:
    """Load the chosen network and write the Hugging Face folder; print a summary."""
    from duda_d2.modeling.interchange.huggingface_segformer import (
        LICENCE_NOTE,
        export_huggingface_segformer,
        segformer_network_settings,
    )

    cfg, net_cfg, network = load_trained_network(args.config_file, args.weights, args.network)
    settings = segformer_network_settings(network)
    names = class_names_of(cfg, settings["num_classes"])
    paths = export_huggingface_segformer(
        network.state_dict(), settings["variant"], settings["num_classes"],
        settings["embed_dim"], names, args.output_dir,
        pixel_mean=list(net_cfg.MODEL.PIXEL_MEAN), pixel_std=list(net_cfg.MODEL.PIXEL_STD),
        classifier_dropout=net_cfg.MODEL.SEM_SEG_HEAD.DROPOUT,
        drop_path_rate=net_cfg.MODEL.MIT.DROP_PATH_RATE,
        ignore_index=net_cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, overwrite=args.overwrite)
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    print(f"exported the {args.network} of {args.config_file} ({args.weights})")
    print(f"network: MiT-{settings['variant']} + SegFormerHead (embed {settings['embed_dim']}),"
          f" {settings['num_classes']} classes: {shown}")
    for name, path in paths.items():
        print(f"wrote {path}")
    print(f"load: SegformerForSemanticSegmentation.from_pretrained('{args.output_dir}'), "
          f"SegformerImageProcessor.from_pretrained('{args.output_dir}')")
    print(LICENCE_NOTE)
    return 0


# ---------------------------------------------------------------------------- from-mmseg
DAFORMER_NETWORK_CONFIG = os.path.join(REPO_ROOT, "configs", "networks", "mit_b5_daformer.yaml")


def _add_from_mmseg(parser: argparse.ArgumentParser) -> None:
    from duda_d2.modeling.interchange.mmseg_daformer import add_from_mmseg_arguments

    add_from_mmseg_arguments(parser)


def _release_class_names(names: Optional[List[str]], num_classes: int) -> List[str]:
    """The release's class names when it has one per class, else ``class_<i>``."""
    if names and len(names) == num_classes:
        return names
    return [f"class_{i}" for i in range(num_classes)]


def run_from_mmseg(args: argparse.Namespace) -> int:
    """Import a DAFormer mmseg checkpoint's network and write model.pth / model.yaml (over
    configs/networks/mit_b5_daformer.yaml); print a summary. A partial conversion writes
    nothing."""
    from duda_d2.modeling.interchange.mmseg_daformer import (
        LICENCE_NOTE,
        convert_mmseg_daformer,
        check_release_meta,
        load_mmseg_checkpoint,
        meta_class_names,
        network_config_opts,
    )

    try:
        state, meta = load_mmseg_checkpoint(args.checkpoint, args.trust_pickle)
        check_release_meta(meta)
        network, info, report = convert_mmseg_daformer(state, which=args.which,
                                                       aspp_dilations=args.aspp_dilations)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"{args.checkpoint}: {error}") from None
    print(report.summary())
    problems = report.problems()
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise UserError(f"{len(problems)} unmatched keys or shape mismatches converting "
                        f"'{args.checkpoint}'; nothing written:\n{lines}")
    opts = network_config_opts(info)
    paths = write_converted_network(
        args.output_dir, network, dict(zip(opts[::2], opts[1::2])),
        os.path.abspath(args.checkpoint),
        extra={"network_opts": opts, "info": dict(info),
               "class_names": _release_class_names(meta_class_names(meta),
                                                   info["num_classes"])},
        base_config=DAFORMER_NETWORK_CONFIG)
    print(f"wrote {len(network)} tensors (MiT-{info['variant']} + DAFormerHead "
          f"{info['fusion']}, {info['num_classes']} classes, '{info['which']}') to "
          f"{paths['weights']} and {paths['config']}")
    print_usage_hints(paths)
    print(f"large pair: MODEL.DUDA.LARGE_NETWORK_WEIGHTS {paths['weights']}")
    print(LICENCE_NOTE)
    return 0


# ---------------------------------------------------------------------------- command line
SUBCOMMANDS: Dict[str, Subcommand] = {
    "from-huggingface": Subcommand(
        "Hugging Face SegformerForSemanticSegmentation folder -> model.pth + model.yaml",
        _add_from_huggingface, run_from_huggingface),
    "to-huggingface": Subcommand(
        "a trained MiT + SegFormerHead network -> Hugging Face save_pretrained folder",
        _add_to_huggingface, run_to_huggingface),
    "from-mmseg": Subcommand(
        "DAFormer mmseg checkpoint (MiT + DAFormer head) -> model.pth + model.yaml",
        _add_from_mmseg, run_from_mmseg),
}


def build_parser() -> argparse.ArgumentParser:
    """One sub-parser per ``SUBCOMMANDS`` entry, each with the common arguments last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder to write")
        p.add_argument("--overwrite", action="store_true",
                       help="replace files in a non-empty OUTPUT_DIR")
        p.add_argument("--debug", action="store_true",
                       help="show the traceback of errors a user can fix (also DUDA_DEBUG=1)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run one subcommand; 0 on success, 1 on an error the user can fix (message on stderr,
    nothing written), 2 on bad arguments (argparse)."""
    args = build_parser().parse_args(argv)
    command = SUBCOMMANDS[args.command]

    def run() -> int:
        check_output_dir(args.output_dir, args.overwrite)
        return command.run(args)

    try:
        return exit_on_user_error(run, debug=args.debug)
    except SystemExit as error:  # the message is printed
        return error.code


if __name__ == "__main__":
    sys.exit(main())
