"""Convert torchvision / timm ImageNet ResNet checkpoints into Detectron2 ResNet keys.

torchvision's ``resnet50/101/152`` (``resnet101-*.pth``) and timm's ``resnet*`` models
(``pytorch_model.bin`` / ``model.safetensors`` of a timm hub repository) share one layout,
which maps onto Detectron2's ``ResNet`` (``build_dilated_resnet_backbone``, DeepLabV2's
backbone) as follows (``{i}`` = 1..4, ``{j}`` a block, ``{k}`` = 1..3; every BatchNorm carries
weight, bias, running_mean, running_var and num_batches_tracked -- a counter, set to 0 when a
file has none)::

    conv1.weight                   stem.conv1.weight
    bn1.*                          stem.conv1.norm.*
    layer{i}.{j}.conv{k}.weight    res{i+1}.{j}.conv{k}.weight
    layer{i}.{j}.bn{k}.*           res{i+1}.{j}.conv{k}.norm.*
    layer{i}.{j}.downsample.0.weight   res{i+1}.{j}.shortcut.weight
    layer{i}.{j}.downsample.1.*        res{i+1}.{j}.shortcut.norm.*
    fc.*                           dropped (the ImageNet classifier)

Deep (V1c) stems -- mmcv/mmseg's ``resnet101_v1c`` (``stem.{0,1,3,4,6,7}``), which DAFormer,
HRDA and MIC use for their DeepLabV2 rows, and timm's ``resnet*c`` (``conv1.{0,1,3,4,6}`` +
``bn1``) -- map to Detectron2's ``DeepLabStem`` (``stem.conv{1,2,3}`` with their ``.norm``);
build with ``MODEL.RESNETS.STEM_TYPE deep``.

All put the stride of a bottleneck in its 3x3 convolution: build with
``MODEL.RESNETS.STRIDE_IN_1X1 False`` (the project's DeepLabV2 configs do). The dilations of
``RES4_DILATION`` / ``RES5_DILATION`` do not change any weight's shape, so the same file serves
the dilated network. Every key and shape is checked against the network the config builds;
nothing is converted silently (``ConversionReport``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from .mit_convert import ConversionReport, resolve_variant, unwrap_state_dict

__all__ = ["is_resnet_checkpoint", "convert_resnet_state_dict", "resnet_target_shapes",
           "infer_resnet_depth", "stem_type"]

TORCHVISION = "torchvision/timm ResNet"
_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_BN = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
_ANY_LAYER_RE = re.compile(r"(^|\.)layer[1-4]\.\d+\.conv[1-3]\.weight$")
_LAYER_RE = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)$")


def is_resnet_checkpoint(keys) -> bool:
    """Whether ``keys`` look like a torchvision/timm/mmcv ResNet (``layer1.0.conv1.weight``,
    possibly under a ``module.`` / ``backbone.`` prefix)."""
    return any(_ANY_LAYER_RE.search(k) for k in keys)


# Deep (V1c) stems: timm's resnet*c (conv1 = Sequential(conv, bn, relu, conv, bn, relu, conv),
# then bn1) and mmcv/mmseg's ResNetV1c (stem = Sequential(conv, bn, relu) x 3).
_DEEP_STEM = {"conv1.0.": "stem.conv1.", "conv1.1.": "stem.conv1.norm.",
              "conv1.3.": "stem.conv2.", "conv1.4.": "stem.conv2.norm.",
              "conv1.6.": "stem.conv3.", "bn1.": "stem.conv3.norm.",
              "stem.0.": "stem.conv1.", "stem.1.": "stem.conv1.norm.",
              "stem.3.": "stem.conv2.", "stem.4.": "stem.conv2.norm.",
              "stem.6.": "stem.conv3.", "stem.7.": "stem.conv3.norm."}


def stem_type(keys) -> str:
    """"deep" for a three-convolution (V1c) stem (timm ``conv1.0.weight`` or mmcv
    ``stem.0.weight``), else "basic"."""
    return "deep" if any(k in ("conv1.0.weight", "stem.0.weight") for k in keys) else "basic"


def _target(key: str, stem: str = "basic") -> Tuple[Optional[str], str]:
    """(Detectron2 key, '') or (None, why it is dropped / '' when unknown)."""
    if key.startswith("fc."):
        return None, "ImageNet classification head"
    if stem == "deep":
        prefix = next((p for p in _DEEP_STEM if key.startswith(p)), None)
        if prefix is not None:
            rest = key[len(prefix):]
            ok = rest == "weight" if not _DEEP_STEM[prefix].endswith("norm.") else rest in _BN
            return (_DEEP_STEM[prefix] + rest, "") if ok else (None, "")
    if key == "conv1.weight":
        return "stem.conv1.weight", ""
    if key.startswith("bn1.") and key[4:] in _BN:
        return f"stem.conv1.norm.{key[4:]}", ""
    m = _LAYER_RE.match(key)
    if not m:
        return None, ""
    stage, block, part, param = int(m.group(1)) + 1, m.group(2), m.group(3), m.group(4)
    prefix = f"res{stage}.{block}"
    if part.startswith("conv") and param == "weight":
        return f"{prefix}.{part}.weight", ""
    if part.startswith("bn") and param in _BN:
        return f"{prefix}.conv{part[2]}.norm.{param}", ""
    if part == "downsample.0" and param == "weight":
        return f"{prefix}.shortcut.weight", ""
    if part == "downsample.1" and param in _BN:
        return f"{prefix}.shortcut.norm.{param}", ""
    return None, ""


def infer_resnet_depth(keys) -> Optional[int]:
    """50 / 101 / 152 from the number of blocks per stage, or None."""
    blocks = []
    for i in range(1, 5):
        found = {int(m.group(2)) for k in keys for m in [_LAYER_RE.match(k)]
                 if m and int(m.group(1)) == i}
        blocks.append(max(found) + 1 if found else 0)
    return next((d for d, b in _BLOCKS.items() if tuple(blocks) == b), None)


def resnet_target_shapes(depth: int, stem: str = "basic") -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the Detectron2 ResNet-``depth`` with ``stem`` this project builds
    (meta device)."""
    from detectron2.layers import ShapeSpec

    import os

    from ...config import load_config
    from ..network import REPO_ROOT
    from .dilated_resnet import build_dilated_resnet_backbone

    cfg = load_config(os.path.join(REPO_ROOT, "configs", "networks", "deeplabv2_r101.yaml"), [
        "MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.STEM_TYPE", stem,
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"]])
    with torch.device("meta"):
        backbone = build_dilated_resnet_backbone(cfg, ShapeSpec(channels=3))
    return {k: tuple(v.shape) for k, v in backbone.state_dict().items()}


def convert_resnet_state_dict(state_dict: Mapping[str, Any], depth: Optional[int] = None
                              ) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Rename a torchvision/timm ResNet state dict to Detectron2's ResNet keys.

    ``depth`` is inferred from the blocks per stage when None and checked otherwise. Returns
    the tensors whose key and shape match, and a report (``report.ok`` False when anything did
    not match). ValueError when the depth cannot be determined."""
    state = unwrap_state_dict(state_dict)
    for prefix in ("module.", "backbone."):  # DataParallel; an mmseg model's backbone
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    depth = resolve_variant(depth, infer_resnet_depth(list(state)), list(_BLOCKS), "ResNet",
                            "other blocks per stage", f"are none of {_BLOCKS}")
    stem = stem_type(state)
    report = ConversionReport(source_format=TORCHVISION + (" (deep V1c stem)" if stem == "deep"
                                                           else ""),
                              variant=str(depth), num_source=len(state), architecture="ResNet")
    expected = resnet_target_shapes(depth, stem)
    converted: Dict[str, torch.Tensor] = {}
    sources: Dict[str, str] = {}
    for key, value in state.items():
        target, why = _target(key, stem)
        if target is None:
            (report.dropped if why else report.unmatched_source).append(
                (key, why or "not a torchvision/timm ResNet key"))
        elif target in sources:
            report.unmatched_source.append((key, f"duplicate of '{sources[target]}'"))
        elif target not in expected:
            report.unmatched_source.append((key, f"maps to '{target}', which the network "
                                                 f"lacks"))
        elif tuple(value.shape) != expected[target]:
            report.shape_mismatches.append((target, f"'{key}'", str(list(value.shape)),
                                            expected[target]))
        else:
            converted[target], sources[target] = value.contiguous(), key
    for k in expected:  # batch counters are not weights: files saved without them get 0
        if k.endswith("num_batches_tracked") and k not in converted:
            converted[k] = torch.tensor(0, dtype=torch.long)
    converted = {k: converted[k] for k in expected if k in converted}
    report.converted = list(converted)
    mismatched = {t for t, *_ in report.shape_mismatches}
    report.missing_target = [k for k in expected if k not in converted and k not in mismatched]
    return converted, report
