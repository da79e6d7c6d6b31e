#!/usr/bin/env python
"""Convert ImageNet-pretrained encoder weights into this project's backbone keys.

    python tools/convert_pretrained.py mit_b0.pth pretrained/mit_b0_d2.pth
    python tools/convert_pretrained.py nvidia-mit-b2/model.safetensors out/mit_b2.pth --variant b2
    python tools/convert_pretrained.py resnet101-cd907fc2.pth pretrained/resnet101_d2.pth
    python tools/convert_pretrained.py mobilenetv3_large_100.ra_in1k/model.safetensors \
        pretrained/mobilenetv3_large_100_d2.pth --timm-model mobilenetv3_large_100

ResNets: torchvision's ``resnet50/101/152`` files and timm's ``resnet*`` checkpoints
(``pytorch_model.bin`` / ``model.safetensors``) become Detectron2 ResNet keys for
``build_dilated_resnet_backbone`` (``duda_d2.modeling.backbone.resnet_convert``; build with
``MODEL.RESNETS.STRIDE_IN_1X1 False``).

Any timm model (``--timm-model NAME``, or the ``architecture`` of the hub folder's
``config.json`` when the keys are neither a ResNet's nor a MiT's): the hub file is loaded by timm's
local-file mechanism into ``build_timm_backbone``'s body for ``--timm-out-features`` and checked
strictly (``duda_d2.modeling.backbone.timm_checkpoint``). ``MODEL.BACKBONE.WEIGHTS`` also takes
the hub file itself; converting checks it once, ahead of training.

Reads the official SegFormer release (``mit_b*.pth``) or HuggingFace ``nvidia/mit-b*``
(``pytorch_model.bin`` / ``model.safetensors``), detects the layout and the variant, and writes
``{"model": <backbone state dict>, "__author__": ..., "source": ..., "variant": ...}`` for
``MODEL.BACKBONE.WEIGHTS``. Any unmatched key or shape mismatch is an error (exit code 1, nothing
written) unless ``--allow-unmatched`` is given. The logic is in
``duda_d2.modeling.backbone.mit_convert``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from duda_d2.modeling.backbone.mit_convert import (
    convert_state_dict,
    detect_format,
    load_state_dict_file,
)
from duda_d2.modeling.backbone.resnet_convert import (
    convert_resnet_state_dict,
    is_resnet_checkpoint,
)
from duda_d2.modeling.backbone.timm_backbone import DEFAULT_OUT_FEATURES, TimmBackbone
from duda_d2.modeling.backbone.timm_checkpoint import hub_architecture
from duda_d2.utils.atomic_files import atomic_write_bytes

AUTHOR = "duda_d2.convert_pretrained"
VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments of the converter."""
    parser = argparse.ArgumentParser(
        description="Convert ImageNet encoder weights (SegFormer / HuggingFace MiT, torchvision / "
                    "timm / mmcv ResNet, any timm model) to duda_d2 backbone keys.")
    parser.add_argument("input", help="mit_b*.pth, pytorch_model.bin or model.safetensors")
    parser.add_argument("output", help="converted checkpoint to write (.pth)")
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="MiT variant; inferred from the tensor shapes when omitted, "
                             "checked against them when given")
    parser.add_argument("--timm-model", default=None, metavar="NAME",
                        help="the timm model of a timm hub checkpoint (MODEL.TIMM.NAME); read from "
                             "the config.json next to the input when omitted")
    parser.add_argument("--timm-out-features", nargs="+", default=list(DEFAULT_OUT_FEATURES),
                        metavar="RES", help="MODEL.TIMM.OUT_FEATURES of the backbone the file is "
                                            "for (default: %(default)s)")
    parser.add_argument("--allow-unmatched", action="store_true",
                        help="write the output even if keys are unmatched or shapes differ (MiT and "
                             "ResNet; a timm checkpoint is always loaded strictly)")
    return parser.parse_args(argv)


def save_converted(path: str, model: dict, source: str, variant: str) -> None:
    """Write the Detectron2-loadable checkpoint atomically (temp file + ``os.replace``)."""
    data = {"model": model, "__author__": AUTHOR, "source": source, "variant": variant}
    atomic_write_bytes(path, lambda f: torch.save(data, f))


def _timm_architecture(path: str, state_dict: dict) -> Optional[str]:
    """The hub config's architecture, for a file that is neither a ResNet nor a MiT."""
    if is_resnet_checkpoint(state_dict):
        return None
    try:
        detect_format(list(state_dict))
        return None  # a MiT
    except ValueError:
        return hub_architecture(path)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the conversion; 0 on success, 1 on any error (nothing is written then)."""
    args = parse_args(argv)
    try:
        state_dict = load_state_dict_file(args.input)
        timm_model = args.timm_model or _timm_architecture(args.input, state_dict)
        if timm_model:
            if args.variant:
                raise ValueError(f"--variant {args.variant} names a MiT; a timm checkpoint is "
                                 f"described by --timm-model")
            backbone = TimmBackbone(timm_model, out_features=args.timm_out_features)
            report = backbone.load_timm_checkpoint(args.input)  # strict; raises on any mismatch
            converted = backbone.state_dict()
        elif is_resnet_checkpoint(state_dict):
            if args.variant:
                raise ValueError(f"--variant {args.variant} names a MiT, but '{args.input}' is "
                                 f"a ResNet checkpoint (its depth is read from its blocks)")
            converted, report = convert_resnet_state_dict(state_dict)
        else:
            converted, report = convert_state_dict(state_dict, args.variant)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    problems = report.problems()
    if problems and not args.allow_unmatched:
        print(f"error: {len(problems)} unmatched keys or shape mismatches in '{args.input}':",
              file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print("nothing written; pass --allow-unmatched to write the matching tensors anyway",
              file=sys.stderr)
        return 1
    for line in problems:
        print(f"warning: {line}")
    name = f"{report.architecture}-{report.variant}"
    if report.architecture == "timm":
        name += f" ({' '.join(args.timm_out_features)})"
    save_converted(args.output, converted, args.input,
                   report.variant if report.architecture == "MiT" else name)
    print(f"wrote {len(converted)} tensors ({name}) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
