"""Masked image consistency (MIC): random block masks over target images."""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["block_mask"]


def block_mask(images: torch.Tensor, ratio: float = 0.7, block_size: int = 32,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(N, 1, H, W) mask of 0/1: square ``block_size`` blocks are dropped (0) with probability
    ``ratio``; multiply the images by it to mask them."""
    n, _, h, w = images.shape
    grid = (-(-h // block_size), -(-w // block_size))
    keep = (torch.rand((n, 1, *grid), generator=generator) > ratio).float()
    keep = F.interpolate(keep, scale_factor=block_size, mode="nearest")[..., :h, :w]
    return keep.to(images.device)
