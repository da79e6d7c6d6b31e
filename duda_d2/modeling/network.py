"""One segmentation network: a registered backbone followed by a registered head."""
from __future__ import annotations

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.modeling import build_backbone, build_sem_seg_head

__all__ = ["SegmentationNetwork", "build_segmentation_network"]


class SegmentationNetwork(nn.Module):
    """Backbone + head mapping normalised images (N, 3, H, W) to low-resolution logits.

    Meta-architectures hold one of these per network (student, teacher, small student), so a
    network is a self-contained unit that can be copied, EMA-averaged or exported alone.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @property
    def size_divisibility(self) -> int:
        return getattr(self.backbone, "size_divisibility", 0)


def build_segmentation_network(cfg: CfgNode) -> SegmentationNetwork:
    """Build the backbone named by ``MODEL.BACKBONE.NAME`` and the head ``MODEL.SEM_SEG_HEAD.NAME``."""
    backbone = build_backbone(cfg)
    return SegmentationNetwork(backbone, build_sem_seg_head(cfg, backbone.output_shape()))
