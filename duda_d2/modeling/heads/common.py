"""Building blocks shared by the decoder heads."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec

__all__ = ["LevelEmbedding", "conv_bn_relu", "check_in_features"]


def check_in_features(head: str, in_features: Sequence[str],
                      input_shape: Dict[str, ShapeSpec],
                      key: str = "MODEL.SEM_SEG_HEAD.IN_FEATURES") -> None:
    """Fail clearly when a head asks for a feature the backbone does not produce (``key``: the
    config key that sets the head's features, named in the error)."""
    if not in_features:
        raise ValueError(f"{head} has no input features; set {key}")
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(f"{head} in_features {missing} not produced by the backbone "
                         f"(it gives {sorted(input_shape)}); set {key}")


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                  dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LevelEmbedding(nn.Module):
    """Per-level linear projection to ``embed_dim`` channels, upsampled to the finest level.

    Used by SegFormer's and DAFormer's heads: returns one (N, embed_dim, H/4, W/4) map per
    input feature, in ``in_features`` order.
    """

    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: Sequence[str],
                 embed_dim: int):
        super().__init__()
        self.in_features = list(in_features)
        self.linear_c = nn.ModuleList(
            nn.Linear(input_shape[f].channels, embed_dim) for f in self.in_features)

    def forward(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        finest = features[self.in_features[0]].shape[2:]
        embedded = []
        for name, linear in zip(self.in_features, self.linear_c):
            x = features[name]
            n, _, h, w = x.shape
            x = linear(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
            if x.shape[2:] != finest:
                x = F.interpolate(x, size=finest, mode="bilinear", align_corners=False)
            embedded.append(x)
        return embedded
