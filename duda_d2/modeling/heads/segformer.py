"""SegFormer's all-MLP decoder head, registered as ``SegFormerHead``.

Each input level is projected to ``EMBED_DIM`` channels by a linear layer, upsampled to the
finest level (stride 4), concatenated (coarsest first), fused by a 1x1 conv + BN + ReLU and
classified by a 1x1 conv after dropout. The head returns stride-4 logits; losses live in the
meta-architectures, which need raw logits for pseudo-labels and distillation.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .common import LevelEmbedding, check_in_features, conv_bn_relu

__all__ = ["SegFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class SegFormerHead(nn.Module):
    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str],
                 num_classes: int, embed_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        check_in_features("SegFormerHead", in_features, input_shape)
        self.embed = LevelEmbedding(input_shape, in_features, embed_dim)
        self.linear_fuse = conv_bn_relu(embed_dim * len(in_features), embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {"input_shape": input_shape, "in_features": head.IN_FEATURES,
                "num_classes": head.NUM_CLASSES, "embed_dim": head.EMBED_DIM,
                "dropout": head.DROPOUT}

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Stride-4 logits (N, num_classes, H/4, W/4)."""
        fused = self.linear_fuse(torch.cat(self.embed(features)[::-1], dim=1))
        return self.linear_pred(self.dropout(fused))
