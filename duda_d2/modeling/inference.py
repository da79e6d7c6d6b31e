"""Whole-image and sliding-window inference of one segmentation network."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..uda.losses import upsample_logits

__all__ = ["whole_inference", "slide_inference"]


def whole_inference(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of the whole (padded) batch, resized to the batch's spatial size."""
    return upsample_logits(network(images), images.shape[-2:])


def _window_starts(length: int, crop: int, stride: int) -> list:
    """Start offsets so that windows of ``crop`` with step ``stride`` cover ``[0, length)``."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return starts + [length - crop]


@torch.no_grad()
def slide_inference(network: nn.Module, images: torch.Tensor, crop_size: Sequence[int],
                    stride: Sequence[int], num_classes: int) -> torch.Tensor:
    """Average the logits of overlapping ``crop_size`` (h, w) windows stepped by ``stride``.

    Windows are evaluated one at a time and accumulated into one (N, C, H, W) sum, so memory
    holds a single window's activations plus the output, whatever the image size.
    """
    n, _, height, width = images.shape
    crop_h, crop_w = crop_size
    total = images.new_zeros((n, num_classes, height, width))
    count = images.new_zeros((1, 1, height, width))
    for top in _window_starts(height, crop_h, stride[0]):
        for left in _window_starts(width, crop_w, stride[1]):
            window = images[:, :, top:top + crop_h, left:left + crop_w]
            logits = upsample_logits(network(window), window.shape[-2:])
            total[:, :, top:top + window.shape[2], left:left + window.shape[3]] += logits.float()
            count[:, :, top:top + window.shape[2], left:left + window.shape[3]] += 1
    return total / count
