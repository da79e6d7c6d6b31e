"""DAFormer's context-aware fusion head, registered as ``DAFormerHead``.

Like SegFormer's head, every level is linearly embedded to ``EMBED_DIM`` channels and
upsampled to stride 4; the concatenation is then fused with context: by default a depth-wise
separable ASPP (dilations 1, 6, 12, 18; BN + ReLU; no image pooling) followed by a 3x3
bottleneck, then dropout and a 1x1 classifier. ``FUSION`` selects the variants DAFormer
ablates: ``aspp`` (plain dilated 3x3 branches) and ``conv1x1`` (a single 1x1 fusion).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..activation_checkpoint import checkpointed
from .common import LevelEmbedding, check_in_features, conv_bn_relu

__all__ = ["DAFormerHead", "ASPPFusion", "build_fusion", "FUSIONS"]

FUSIONS = ("aspp_dw", "aspp", "conv1x1")


def _branch(in_channels: int, out_channels: int, dilation: int, separable: bool) -> nn.Module:
    """A 1x1 branch for dilation 1, else a dilated 3x3 (depth-wise + point-wise if separable)."""
    if dilation == 1:
        return conv_bn_relu(in_channels, out_channels, 1)
    if separable:
        return nn.Sequential(
            conv_bn_relu(in_channels, in_channels, 3, dilation, groups=in_channels),
            conv_bn_relu(in_channels, out_channels, 1),
        )
    return conv_bn_relu(in_channels, out_channels, 3, dilation)


class ASPPFusion(nn.Module):
    """Parallel dilated branches, concatenated and reduced by a 3x3 bottleneck."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int],
                 separable: bool):
        super().__init__()
        self.branches = nn.ModuleList(_branch(in_channels, channels, d, separable)
                                      for d in dilations)
        self.bottleneck = conv_bn_relu(channels * len(dilations), channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([b(x) for b in self.branches], dim=1))


def build_fusion(fusion: str, in_channels: int, channels: int, dilations: Sequence[int], *,
                 fusion_key: str = "MODEL.SEM_SEG_HEAD.FUSION",
                 dilations_key: str = "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS") -> nn.Module:
    """DAFormer's fusion of the concatenated level embeddings (``in_channels``) to ``channels``:
    ``aspp_dw`` / ``aspp`` (:class:`ASPPFusion`, depth-wise separable or plain, ``dilations``)
    or ``conv1x1``. Shared by the semantic ``DAFormerHead`` and the instance
    ``DAFormerInsEmbedHead``; the keys name the config entries in errors."""
    if fusion not in FUSIONS:
        raise ValueError(f"{fusion_key}={fusion!r} unknown; use one of {FUSIONS}")
    if fusion == "conv1x1":
        return conv_bn_relu(in_channels, channels, 1)
    if not dilations or any(int(d) != d or d < 1 for d in dilations):
        raise ValueError(f"{fusion_key}={fusion!r} needs a non-empty list of positive integer "
                         f"dilations; {dilations_key} is {list(dilations)}")
    return ASPPFusion(in_channels, channels, dilations, fusion == "aspp_dw")


@SEM_SEG_HEADS_REGISTRY.register()
class DAFormerHead(nn.Module):
    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str],
                 num_classes: int, embed_dim: int = 256, dropout: float = 0.1,
                 fusion: str = "aspp_dw", aspp_dilations: Sequence[int] = (1, 6, 12, 18),
                 activation_checkpointing: bool = False):
        """``activation_checkpointing``: recompute the context fusion in the backward pass
        instead of keeping its activations (the ASPP branches at stride 4 hold most of the
        head's memory)."""
        super().__init__()
        check_in_features("DAFormerHead", in_features, input_shape)
        self.activation_checkpointing = activation_checkpointing
        self.embed = LevelEmbedding(input_shape, in_features, embed_dim)
        self.fuse = build_fusion(fusion, embed_dim * len(in_features), embed_dim, aspp_dilations)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {"input_shape": input_shape, "in_features": head.IN_FEATURES,
                "num_classes": head.NUM_CLASSES, "embed_dim": head.EMBED_DIM,
                "dropout": head.DROPOUT, "fusion": head.FUSION,
                "aspp_dilations": head.ASPP_DILATIONS,
                "activation_checkpointing": head.ACTIVATION_CHECKPOINTING}

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Stride-4 logits (N, num_classes, H/4, W/4)."""
        embedded = torch.cat(self.embed(features), dim=1)
        if self.activation_checkpointing and torch.is_grad_enabled():
            fused = checkpointed(self.fuse, embedded)
        else:
            fused = self.fuse(embedded)
        return self.linear_pred(self.dropout(fused))
