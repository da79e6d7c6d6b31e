"""Panoptic label maps, ClassMix of label maps and Panoptic-DeepLab's centre/offset losses, on
plain tensors.

A panoptic label map is an (N, H, W) integer tensor with ``id = class * divisor + instance``:
``instance >= 1`` numbers a thing instance within its image, ``0`` marks stuff pixels and thing
pixels without an instance (a crowd region: it keeps its class but gets no centre or offset
target), and unlabelled pixels are ``ignore_value * divisor``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from .losses import upsample_logits

__all__ = ["panoptic_ids", "segments_of", "mix_panoptic_maps", "masked_mean",
           "center_loss", "offset_loss", "center_distillation", "offset_distillation",
           "thing_mask"]


def thing_mask(classes: torch.Tensor, thing_ids: Sequence[int]) -> torch.Tensor:
    """Boolean map of the pixels whose class is a thing class."""
    return torch.isin(classes, torch.as_tensor(list(thing_ids), device=classes.device))


def panoptic_ids(classes: torch.Tensor, instances: torch.Tensor, thing_ids: Sequence[int],
                 divisor: int) -> torch.Tensor:
    """``class * divisor + instance`` on thing pixels, ``class * divisor`` elsewhere
    (``instances``: 0 = no instance); ``classes`` keep their ignore value."""
    things = thing_mask(classes, thing_ids)
    return classes.long() * divisor + torch.where(things, instances.long(), 0)


def segments_of(panoptic: torch.Tensor, thing_ids: Sequence[int], divisor: int,
                ignore_value: int) -> List[Dict[str, int]]:
    """Detectron2's ``segments_info`` of one (H, W) label map: one segment per id, the ignore
    id left out, thing pixels without an instance marked ``iscrowd``."""
    things = set(int(t) for t in thing_ids)
    segments = []
    for segment_id in torch.unique(panoptic).tolist():
        category, instance = divmod(int(segment_id), divisor)
        if category == ignore_value:
            continue
        segments.append({"id": int(segment_id), "category_id": category,
                         "iscrowd": int(category in things and instance == 0)})
    return segments


def mix_panoptic_maps(masks: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                      divisor: int) -> torch.Tensor:
    """ClassMix of label maps: ``M`` takes the source's ids, ``1 - M`` the target's.

    Pasted source instances keep their own instances, renumbered after the target image's
    largest instance number so that no id is shared (instance 0 -- stuff, crowd -- stays 0).
    Source image ``i mod N_s`` is pasted on target ``i``, as ``mix_maps``.
    """
    idx = torch.arange(target.shape[0], device=source.device) % source.shape[0]
    source, masks = source[idx], masks[idx]
    offset = (target % divisor).flatten(1).max(dim=1).values.view(-1, 1, 1)
    source_instance = source % divisor
    if (source_instance + offset).max() >= divisor:
        raise ValueError(f"the mixed panoptic map would need instance numbers >= the label "
                         f"divisor {divisor}: too many instances per image for this divisor")
    shifted = torch.where(source_instance > 0, source + offset, source)
    return torch.where(masks[:, 0].bool(), shifted, target)


def masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, H, W) maps: ``Σ mask · weight · loss / Σ mask`` (0 with a graph when the mask is empty).

    Panoptic-DeepLab divides by the sum of its 0/1 weights, the number of pixels that have a
    target; pseudo-target weights (the teacher's quality, 1 on pasted source pixels) scale the
    numerator only, so a doubtful batch weighs less -- as they do in the cross-entropy."""
    weighted = per_pixel * mask
    if weight is not None:
        weighted = weighted * weight
    count = mask.sum()
    if count <= 0:
        return weighted.sum() * 0.0
    return weighted.sum() / count


def center_loss(center: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Panoptic-DeepLab's centre loss: squared error of the (N, 1, h, w) heat-map, resized to
    the (N, H, W) target, over the pixels with a target (``mask``)."""
    center = upsample_logits(center, target.shape[-2:])[:, 0]
    return masked_mean((center - target) ** 2, mask, weight)


def offset_loss(offset: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Panoptic-DeepLab's offset loss: L1 of the (N, 2, h, w) offsets (pixels), resized to the
    (N, 2, H, W) target, summed over (dy, dx) and averaged over the pixels with a target."""
    offset = upsample_logits(offset, target.shape[-2:])
    return masked_mean((offset - target).abs().sum(dim=1), mask, weight)


def center_distillation(teacher: torch.Tensor, student: torch.Tensor, size) -> torch.Tensor:
    """``mean((h_S - sg h_T)²)`` over all pixels at ``size``: the raw heat-maps as soft targets."""
    teacher = upsample_logits(teacher.detach().float(), size)
    student = upsample_logits(student.float(), size)
    return ((student - teacher) ** 2).mean()


def offset_distillation(teacher: torch.Tensor, student: torch.Tensor,
                        things: torch.Tensor) -> torch.Tensor:
    """L1 between the student's and the (detached) teacher's offsets on the ``things`` pixels
    (N, H, W) of the (pseudo-)labels, summed over (dy, dx), averaged over those pixels."""
    size = things.shape[-2:]
    teacher = upsample_logits(teacher.detach().float(), size)
    student = upsample_logits(student.float(), size)
    return masked_mean((student - teacher).abs().sum(dim=1), things.float())
