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
    """Cross-entropy per pixel, scaled by ``pixel_weight``, averaged over *all* pixels.

    ``logits`` (N, C, H, W) are resized to the target's (H, W) first. As mmseg's
    ``CrossEntropyLoss`` that DAFormer/MIC use (``reduction="mean"`` over the element-wise
    loss), ignored pixels count as 0 in the mean rather than leaving the denominator: a crop
    with much ignore (a Cityscapes hood, an unlabelled SYNTHIA region) weighs less, and the
    mean over a batch split across processes equals the mean of the processes' means (their
    batches are equal in size), so data-parallel training averages to the one-process loss.
    """
    logits = upsample_logits(logits, target.shape[-2:])
    per_pixel = F.cross_entropy(logits, target.long(), ignore_index=ignore_index,
                                reduction="none")
    if pixel_weight is not None:
        per_pixel = per_pixel * pixel_weight
    return per_pixel.mean()


def downscale_labels_by_purity(labels: torch.Tensor, size, num_classes: int,
                               min_purity: float = 0.75, ignore_index: int = 255) -> torch.Tensor:
    """(N, h, w) labels for a coarse feature map, as MIC's ``downscale_label_ratio``: unlabelled
    pixels count as one more class, and a cell gets its majority class when that class covers
    at least ``min_purity`` of *all* the cell's pixels, else ``ignore_index`` (as it does when
    unlabelled pixels are the majority). Cells are average-pooled to ``size``
    (``adaptive_avg_pool2d``, the same as MIC's ``avg_pool2d`` when the label size is a multiple
    of the feature size, and defined when it is not)."""
    unlabelled = num_classes
    classes = torch.where(labels == ignore_index, unlabelled, labels).long()
    one_hot = F.one_hot(classes, num_classes + 1).permute(0, 3, 1, 2).float()
    share, cls = F.adaptive_avg_pool2d(one_hot, size).max(dim=1)
    keep = (share >= min_purity) & (cls != unlabelled)
    return torch.where(keep, cls, torch.full_like(cls, ignore_index))


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
