"""Bottom-up instance heads (Panoptic-DeepLab's centre heat-map + centre offsets), registered in
Detectron2's ``INS_EMBED_BRANCHES_REGISTRY`` (``projects/panoptic_deeplab``).

Both return ``{"center": (N, 1, H/4, W/4), "offset": (N, 2, H/4, W/4)}``; offsets are (dy, dx)
in *input-image* pixels (the raw prediction times the head's stride), so resizing them
bilinearly is all a caller does -- whole-image, sliding-window and teacher outputs alike.

- ``DAFormerInsEmbedHead`` (large networks): DAFormer's context fusion -- every level embedded
  and upsampled to stride 4, fused by the (depth-wise separable) ASPP of ``DAFormerHead`` -- then
  Panoptic-DeepLab's centre and offset prediction branches. EDAPS, the panoptic UDA reference,
  also gives its instance decoder DAFormer's fusion; it is top-down, this one bottom-up.
- ``LightInsEmbedHead`` (small students): Detectron2's own ``PanopticDeepLabInsEmbedHead`` in its
  depth-wise separable variant (DeepLabV3+ decoder with ASPP on the coarsest level), used as it
  is through its ``layers``; ASPP pools globally, so any input size works.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.projects.panoptic_deeplab import (INS_EMBED_BRANCHES_REGISTRY,
                                                  PanopticDeepLabInsEmbedHead)

from .common import LevelEmbedding, conv_bn_relu
from .daformer import FUSIONS, ASPPFusion

__all__ = ["DAFormerInsEmbedHead", "LightInsEmbedHead", "CenterOffsetPredictors"]

CENTER, OFFSET = "center", "offset"


def _check_features(head: str, in_features: Sequence[str],
                    input_shape: Dict[str, ShapeSpec]) -> None:
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(f"{head} in_features {missing} not produced by the backbone (it gives "
                         f"{sorted(input_shape)}); set MODEL.INS_EMBED_HEAD.IN_FEATURES")


class CenterOffsetPredictors(nn.Module):
    """Panoptic-DeepLab's two prediction branches on a stride-``stride`` feature map: centre
    (3x3 conv, 3x3 conv to ``head_channels``, 1x1 to 1) and offset (the same to 2), the
    predictors initialised as Panoptic-DeepLab does (normal std 0.001, zero bias)."""

    def __init__(self, channels: int, head_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.center_head = nn.Sequential(conv_bn_relu(channels, channels, 3),
                                         conv_bn_relu(channels, head_channels, 3))
        self.offset_head = nn.Sequential(conv_bn_relu(channels, channels, 3),
                                         conv_bn_relu(channels, head_channels, 3))
        self.center_predictor = nn.Conv2d(head_channels, 1, 1)
        self.offset_predictor = nn.Conv2d(head_channels, 2, 1)
        for predictor in (self.center_predictor, self.offset_predictor):
            nn.init.normal_(predictor.weight, 0, 0.001)
            nn.init.constant_(predictor.bias, 0)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {CENTER: self.center_predictor(self.center_head(x)),
                OFFSET: self.offset_predictor(self.offset_head(x)) * self.stride}


@INS_EMBED_BRANCHES_REGISTRY.register()
class DAFormerInsEmbedHead(nn.Module):
    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, in_features: List[str],
                 embed_dim: int = 256, fusion: str = "aspp_dw",
                 fusion_dilations: Sequence[int] = (1, 6, 12, 18), head_channels: int = 32,
                 common_stride: int = 4):
        super().__init__()
        _check_features("DAFormerInsEmbedHead", in_features, input_shape)
        if fusion not in FUSIONS:
            raise ValueError(f"MODEL.INS_EMBED_HEAD.FUSION={fusion!r} unknown; use one of "
                             f"{FUSIONS}")
        self.embed = LevelEmbedding(input_shape, in_features, embed_dim)
        concat = embed_dim * len(in_features)
        if fusion == "conv1x1":
            self.fuse = conv_bn_relu(concat, embed_dim, 1)
        else:
            self.fuse = ASPPFusion(concat, embed_dim, fusion_dilations, fusion == "aspp_dw")
        self.predictors = CenterOffsetPredictors(embed_dim, head_channels, common_stride)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.INS_EMBED_HEAD
        return {"input_shape": input_shape, "in_features": list(head.IN_FEATURES),
                "embed_dim": head.EMBED_DIM, "fusion": head.FUSION,
                "fusion_dilations": list(head.FUSION_DILATIONS),
                "head_channels": head.HEAD_CHANNELS, "common_stride": head.COMMON_STRIDE}

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.predictors(self.fuse(torch.cat(self.embed(features), dim=1)))


@INS_EMBED_BRANCHES_REGISTRY.register()
class LightInsEmbedHead(nn.Module):
    """Detectron2's ``PanopticDeepLabInsEmbedHead`` with depth-wise separable convolutions
    (held, not re-implemented); its raw offsets (in stride-4 pixels) are scaled to image pixels.
    (Its ASPP image-pooling branch has no normalisation, so one image per process trains.)"""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, in_features: List[str],
                 project_features: List[str], project_channels: List[int],
                 aspp_channels: int, aspp_dilations: List[int], aspp_dropout: float,
                 convs_dim: int, head_channels: int, common_stride: int = 4, norm: str = "BN"):
        super().__init__()
        _check_features("LightInsEmbedHead", in_features, input_shape)
        if list(project_features) != list(in_features[:-1]):
            raise ValueError(f"MODEL.INS_EMBED_HEAD.PROJECT_FEATURES {list(project_features)} "
                             f"must be IN_FEATURES without its last (ASPP) level: "
                             f"{list(in_features[:-1])}")
        if len(project_channels) != len(project_features):
            raise ValueError("MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS needs one value per "
                             "PROJECT_FEATURES entry")
        self.common_stride = common_stride
        self.decoder = PanopticDeepLabInsEmbedHead(
            {k: v for k, v in input_shape.items() if k in in_features},
            project_channels=list(project_channels), aspp_dilations=list(aspp_dilations),
            aspp_dropout=aspp_dropout,
            decoder_channels=[convs_dim] * (len(in_features) - 1) + [aspp_channels],
            common_stride=common_stride, norm=norm, train_size=None,
            head_channels=head_channels, center_loss_weight=0.0, offset_loss_weight=0.0,
            use_depthwise_separable_conv=True)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.INS_EMBED_HEAD
        return {"input_shape": input_shape, "in_features": list(head.IN_FEATURES),
                "project_features": list(head.PROJECT_FEATURES),
                "project_channels": list(head.PROJECT_CHANNELS),
                "aspp_channels": head.ASPP_CHANNELS, "aspp_dilations": list(head.ASPP_DILATIONS),
                "aspp_dropout": head.ASPP_DROPOUT, "convs_dim": head.CONVS_DIM,
                "head_channels": head.HEAD_CHANNELS, "common_stride": head.COMMON_STRIDE,
                "norm": head.NORM}

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        center, offset = self.decoder.layers(features)
        return {CENTER: center, OFFSET: offset * self.common_stride}
