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
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["SegFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class SegFormerHead(nn.Module):
    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str],
                 num_classes: int, embed_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"SegFormerHead in_features {missing} not produced by the backbone "
                             f"(it gives {sorted(input_shape)})")
        self.in_features = list(in_features)
        self.common_stride = min(input_shape[f].stride for f in self.in_features)
        self.linear_c = nn.ModuleList(
            nn.Linear(input_shape[f].channels, embed_dim) for f in self.in_features)
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(self.in_features), embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {"input_shape": input_shape, "in_features": head.IN_FEATURES,
                "num_classes": head.NUM_CLASSES, "embed_dim": head.EMBED_DIM,
                "dropout": head.DROPOUT}

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Stride-``common_stride`` logits (N, num_classes, H/4, W/4)."""
        finest = features[self.in_features[0]].shape[2:]
        embedded = []
        for name, linear in zip(self.in_features, self.linear_c):
            x = features[name]
            n, _, h, w = x.shape
            x = linear(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
            if x.shape[2:] != finest:
                x = F.interpolate(x, size=finest, mode="bilinear", align_corners=False)
            embedded.append(x)
        fused = self.linear_fuse(torch.cat(embedded[::-1], dim=1))
        return self.linear_pred(self.dropout(fused))

