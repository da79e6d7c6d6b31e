"""Segmentation losses on plain tensors."""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["upsample_logits", "weighted_cross_entropy", "downscale_labels_by_purity",
           "feature_distance_loss"]


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


def downscale_labels_by_purity(labels: torch.Tensor, size, num_classes: int,
                               min_purity: float = 0.75, ignore_index: int = 255) -> torch.Tensor:
    """(N, h, w) labels for a coarse feature map: the majority class of each cell when it
    covers at least ``min_purity`` of the cell's labelled pixels, else ``ignore_index``."""
    valid = labels != ignore_index
    one_hot = F.one_hot(torch.where(valid, labels, 0).long(), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot.float() * valid.unsqueeze(1)
    shares = F.adaptive_avg_pool2d(one_hot, size)
    labelled = shares.sum(dim=1).clamp(min=1e-6)
    share, cls = shares.max(dim=1)
    return torch.where(share / labelled >= min_purity, cls,
                       torch.full_like(cls, ignore_index))


def feature_distance_loss(features: torch.Tensor, imnet_features: torch.Tensor,
                          labels: torch.Tensor, thing_classes, num_classes: int,
                          min_purity: float = 0.75, ignore_index: int = 255) -> torch.Tensor:
    """DAFormer's thing-class ImageNet feature distance: mean L2 distance between the student's
    and the frozen ImageNet encoder's features over cells whose (pure) label is a thing class.
    Returns 0 (with a graph) when no cell qualifies."""
    coarse = downscale_labels_by_purity(labels, features.shape[-2:], num_classes, min_purity,
                                        ignore_index)
    mask = torch.isin(coarse, torch.as_tensor(list(thing_classes), device=coarse.device))
    distance = torch.norm(features - imnet_features.detach(), dim=1, p=2)
    if not mask.any():
        return distance.sum() * 0.0
    return distance[mask].mean()
