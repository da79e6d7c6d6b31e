"""Whole-image and sliding-window inference of one segmentation network (any named maps)."""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

from ..uda.losses import upsample_logits

__all__ = ["whole_inference", "slide_inference"]

Outputs = Dict[str, torch.Tensor]


def whole_inference(network: nn.Module, images: torch.Tensor) -> Outputs:
    """Every map of the whole (padded) batch, resized to the batch's spatial size."""
    return {k: upsample_logits(v, images.shape[-2:]) for k, v in network(images).items()}


def _window_starts(length: int, crop: int, stride: int) -> list:
    """Start offsets so that windows of ``crop`` with step ``stride`` cover ``[0, length)``."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return starts + [length - crop]


@torch.no_grad()
def slide_inference(network: nn.Module, images: torch.Tensor, crop_size: Sequence[int],
                    stride: Sequence[int]) -> Outputs:
    """Average every map over overlapping ``crop_size`` (h, w) windows stepped by ``stride``.

    Windows are evaluated one at a time and accumulated into one (N, C, H, W) sum per map, so
    memory holds a single window's activations plus the output, whatever the image size.
    """
    n, _, height, width = images.shape
    crop_h, crop_w = crop_size
    totals: Outputs = {}
    count = images.new_zeros((1, 1, height, width))
    for top in _window_starts(height, crop_h, stride[0]):
        for left in _window_starts(width, crop_w, stride[1]):
            window = images[:, :, top:top + crop_h, left:left + crop_w]
            rows = slice(top, top + window.shape[2])
            cols = slice(left, left + window.shape[3])
            for name, value in network(window).items():
                value = upsample_logits(value, window.shape[-2:]).float()
                if name not in totals:
                    totals[name] = images.new_zeros((n, value.shape[1], height, width))
                totals[name][:, :, rows, cols] += value
            count[:, :, rows, cols] += 1
    return {name: total / count for name, total in totals.items()}
