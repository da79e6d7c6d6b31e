"""DeepLabV2's classifier, registered as ``DeepLabV2Head``: parallel dilated 3x3 convolutions
on the last feature map (stride 8 with a dilated ResNet), whose logits are summed."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .common import check_in_features

__all__ = ["DeepLabV2Head"]


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV2Head(nn.Module):
    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str],
                 num_classes: int, dilations: Sequence[int] = (6, 12)):
        super().__init__()
        check_in_features("DeepLabV2Head", in_features, input_shape)
        if len(in_features) != 1:
            raise ValueError(f"DeepLabV2Head takes one feature map, got {list(in_features)}; "
                             f"set MODEL.SEM_SEG_HEAD.IN_FEATURES to e.g. ['res5']")
        self.in_feature = in_features[0]
        channels = input_shape[self.in_feature].channels
        self.classifiers = nn.ModuleList(
            nn.Conv2d(channels, num_classes, 3, padding=d, dilation=d) for d in dilations)
        for conv in self.classifiers:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {"input_shape": input_shape, "in_features": head.IN_FEATURES,
                "num_classes": head.NUM_CLASSES, "dilations": head.DEEPLAB_DILATIONS}

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_feature]
        return sum(conv(x) for conv in self.classifiers)
