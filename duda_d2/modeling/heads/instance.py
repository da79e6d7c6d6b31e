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

from .common import LevelEmbedding, check_in_features, conv_bn_relu
from .daformer import build_fusion

__all__ = ["DAFormerInsEmbedHead", "LightInsEmbedHead", "CenterOffsetPredictors"]

CENTER, OFFSET = "center", "offset"
KEY = "MODEL.INS_EMBED_HEAD"


def _check_features(head: str, in_features: Sequence[str], input_shape: Dict[str, ShapeSpec],
                    common_stride: int) -> None:
    """The features exist, are listed finest first (the head's output is at the first one's
    resolution; Detectron2's DeepLabV3+ decoder also orders them by stride), and the first one's
    stride is ``COMMON_STRIDE`` -- the factor that turns offsets into image pixels, so a wrong
    one would silently mis-scale every offset."""
    check_in_features(head, in_features, input_shape, f"{KEY}.IN_FEATURES")
    strides = [input_shape[f].stride for f in in_features]
    if strides != sorted(strides):
        raise ValueError(f"{head}: list {KEY}.IN_FEATURES finest first; {list(in_features)} "
                         f"have strides {strides}")
    if strides[0] != common_stride:
        raise ValueError(f"{head}: its output is at the stride of {in_features[0]!r} "
                         f"({strides[0]}) but {KEY}.COMMON_STRIDE is {common_stride}, the factor "
                         f"that scales offsets to image pixels; make them agree (networks "
                         f"output stride-4 maps: start IN_FEATURES at a stride-4 level)")


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
    """DAFormer's context fusion (:class:`LevelEmbedding` of ``IN_FEATURES`` to ``EMBED_DIM``,
    then ``build_fusion``: ``aspp_dw`` / ``aspp`` with ``FUSION_DILATIONS``, or ``conv1x1``;
    the same blocks as the semantic ``DAFormerHead``, separate weights) followed by
    Panoptic-DeepLab's centre and offset branches (:class:`CenterOffsetPredictors`)."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, in_features: List[str],
                 embed_dim: int = 256, fusion: str = "aspp_dw",
                 fusion_dilations: Sequence[int] = (1, 6, 12, 18), head_channels: int = 32,
                 common_stride: int = 4):
        super().__init__()
        _check_features("DAFormerInsEmbedHead", in_features, input_shape, common_stride)
        self.embed = LevelEmbedding(input_shape, in_features, embed_dim)
        self.fuse = build_fusion(fusion, embed_dim * len(in_features), embed_dim,
                                 fusion_dilations, fusion_key=f"{KEY}.FUSION",
                                 dilations_key=f"{KEY}.FUSION_DILATIONS")
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
    (held, not re-implemented; ``train_size=None``: its ASPP pools globally, so any input size
    works); its raw offsets (in stride-4 pixels) are scaled to image pixels.

    BatchNorm with one image per process: the ASPP image-pooling branch has no normalisation
    (Detectron2 leaves it out for 1x1 maps), so a per-process batch of 1 trains with
    ``NORM "BN"``. The other ASPP branches do normalise the coarsest level: a training batch in
    which that level has a single value per channel (one image whose ASPP level is 1x1, i.e.
    an image of at most 32 px on both sides for ``res5``) cannot be normalised; ``forward``
    says so instead of BatchNorm's "Expected more than 1 value per channel".
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, in_features: List[str],
                 project_features: List[str], project_channels: List[int],
                 aspp_channels: int, aspp_dilations: List[int], aspp_dropout: float,
                 convs_dim: int, head_channels: int, common_stride: int = 4, norm: str = "BN"):
        super().__init__()
        _check_features("LightInsEmbedHead", in_features, input_shape, common_stride)
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
        self.aspp_feature = self.decoder.in_features[-1]
        self.aspp_stride = input_shape[self.aspp_feature].stride
        self.batch_statistics = any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                    for m in self.decoder.modules())

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
        if self.training and self.batch_statistics:
            n, _, h, w = features[self.aspp_feature].shape
            if n * h * w == 1:
                raise ValueError(
                    f"LightInsEmbedHead: its ASPP level {self.aspp_feature!r} (stride "
                    f"{self.aspp_stride}) is 1x1 for the single training image of this process, "
                    f"which BatchNorm cannot normalise; train on crops larger than "
                    f"{self.aspp_stride} px on one side, on more images per process, or with "
                    f"MODEL.INS_EMBED_HEAD.NORM \"GN\"")
        center, offset = self.decoder.layers(features)
        return {CENTER: center, OFFSET: offset * self.common_stride}
