"""Segmentation losses on plain tensors."""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["upsample_logits", "weighted_cross_entropy"]


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinearly resize (N, C, h, w) logits to ``size`` (no-op when already that size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           pixel_weight: Optional[torch.Tensor] = None,
                           ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy averaged over all non-ignored pixels, each scaled by ``pixel_weight``.

    ``logits`` (N, C, H, W) are resized to the target's (H, W) first. The mean runs over the
    pixels that are not ``ignore_index`` -- as DAFormer does, a weight of 0 lowers the loss rather
    than removing the pixel from the denominator, so a low pseudo-label quality shrinks the
    target loss. Returns 0 (with a graph) when every pixel is ignored.
    """
    logits = upsample_logits(logits, target.shape[-2:])
    per_pixel = F.cross_entropy(logits, target.long(), ignore_index=ignore_index,
                                reduction="none")
    if pixel_weight is not None:
        per_pixel = per_pixel * pixel_weight
    valid = (target != ignore_index).sum()
    return per_pixel.sum() / valid.clamp(min=1)
