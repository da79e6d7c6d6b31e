"""ClassMix (DACS): paste half of a source image's classes onto a target image."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["CLASS_POOLS", "class_mix_masks", "MixedBatch", "mix"]


CLASS_POOLS = ("batch", "image")


def class_mix_masks(source_labels: torch.Tensor, ignore_index: int = 255,
                    generator: Optional[torch.Generator] = None,
                    pool: str = "batch") -> torch.Tensor:
    """(N, 1, H, W) masks: 1 where source image ``i`` shows one of the classes drawn for it.

    ``pool="batch"`` (DACS's ``get_class_masks``, which DAFormer/MIC use): for every image,
    ``ceil(n/2)`` of the ``n`` values present anywhere in the source *batch* -- the ignore
    label included -- are drawn at random, so an image may receive classes it does not show
    (fewer pixels pasted) and its ignored pixels may be pasted (they stay ignored in the loss).
    ``pool="image"``: ``ceil(n/2)`` of the image's own ``n`` classes, ignore excluded.
    """
    if pool not in CLASS_POOLS:
        raise ValueError(f"ClassMix class pool {pool!r} unknown; use one of {CLASS_POOLS}")
    masks = torch.zeros_like(source_labels, dtype=torch.float32).unsqueeze(1)
    batch_classes = source_labels.unique()
    for i, label in enumerate(source_labels):
        if pool == "batch":
            classes = batch_classes
        else:
            classes = label.unique()
            classes = classes[classes != ignore_index]
        if len(classes) == 0:
            continue
        pick = torch.randperm(len(classes), generator=generator)[: (len(classes) + 1) // 2]
        masks[i, 0] = torch.isin(label, classes[pick.to(classes.device)]).float()
    return masks


class MixedBatch(NamedTuple):
    images: torch.Tensor  # (N, C, H, W)
    labels: torch.Tensor  # (N, H, W)
    weight: torch.Tensor  # (N, H, W)


def mix(masks: torch.Tensor, source_images: torch.Tensor, target_images: torch.Tensor,
        source_labels: torch.Tensor, target_labels: torch.Tensor,
        target_weight: torch.Tensor) -> MixedBatch:
    """``x = M x_s + (1-M) x_t``, ``y = M y_s + (1-M) ŷ_t``, ``w = M + (1-M) q``.

    Target image ``i`` is mixed with source image ``i mod N_s``; ``masks`` belong to the
    source images used, so there is one mask per target image.
    """
    if source_images.shape[1:] != target_images.shape[1:]:
        raise ValueError(f"cannot mix source images {tuple(source_images.shape[1:])} with target "
                         f"images {tuple(target_images.shape[1:])}: crop both domains to the "
                         f"same size (INPUT.CROP)")
    n = target_images.shape[0]
    idx = torch.arange(n, device=source_images.device) % source_images.shape[0]
    m = masks[idx]
    images = m * source_images[idx] + (1 - m) * target_images
    keep = m[:, 0].bool()
    labels = torch.where(keep, source_labels[idx], target_labels)
    weight = torch.where(keep, torch.ones_like(target_weight), target_weight)
    return MixedBatch(images, labels, weight)
