"""Detectron2's ResNet with dilated res4 and res5 (DeepLabV2's output stride 8).

Detectron2's ``build_resnet_backbone`` dilates res5 only (by at most 2). DeepLabV2 replaces
the strides of res4 and res5 by dilations 2 and 4, keeping a stride-8 feature map; this builder
makes the same Detectron2 ``ResNet`` / ``BottleneckBlock`` stages with those dilations.
"""
from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet
from detectron2.projects.deeplab.resnet import DeepLabStem

__all__ = ["build_dilated_resnet_backbone"]

# "deep": three 3x3 convolutions (out/2, out/2, out), the ResNet-V1c stem.
STEMS = {"basic": BasicStem, "deep": DeepLabStem}
_BLOCKS_PER_STAGE = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


@BACKBONE_REGISTRY.register()
def build_dilated_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Bottleneck ResNet-50/101/152 from ``MODEL.RESNETS``, with ``RES4_DILATION`` and
    ``RES5_DILATION`` replacing the stride of those stages when larger than 1."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH={r.DEPTH} unsupported by the dilated ResNet; "
                         f"use one of {sorted(_BLOCKS_PER_STAGE)}")
    dilations = [1, 1, r.RES4_DILATION, r.RES5_DILATION]
    if r.STEM_TYPE not in STEMS:
        raise ValueError(f"MODEL.RESNETS.STEM_TYPE={r.STEM_TYPE!r} unknown; use one of "
                         f"{sorted(STEMS)}")
    stem = STEMS[r.STEM_TYPE](input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, (num_blocks, dilation) in enumerate(zip(_BLOCKS_PER_STAGE[r.DEPTH], dilations)):
        first_stride = 1 if idx == 0 or dilation > 1 else 2
        stages.append(ResNet.make_stage(
            block_class=BottleneckBlock, num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels, out_channels=out_channels,
            bottleneck_channels=bottleneck, num_groups=r.NUM_GROUPS, norm=r.NORM,
            stride_in_1x1=r.STRIDE_IN_1X1, dilation=dilation))
        in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
