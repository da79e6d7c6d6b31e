"""ClassMix (DACS): paste half of a source image's classes onto a target image."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["CLASS_POOLS", "class_mix_masks", "mix_images", "mix_maps"]


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


def _paired(masks: torch.Tensor, source: torch.Tensor, n: int):
    """Target image ``i`` is mixed with source image ``i mod N_s`` and its mask."""
    idx = torch.arange(n, device=source.device) % source.shape[0]
    return masks[idx], source[idx]


def mix_images(masks: torch.Tensor, source_images: torch.Tensor,
               target_images: torch.Tensor) -> torch.Tensor:
    """``x = M x_s + (1-M) x_t`` (N, C, H, W); ``masks`` belong to the source images used, so
    there is one mask per target image."""
    if source_images.shape[1:] != target_images.shape[1:]:
        raise ValueError(f"cannot mix source images {tuple(source_images.shape[1:])} with target "
                         f"images {tuple(target_images.shape[1:])}: crop both domains to the "
                         f"same size (INPUT.CROP)")
    m, source = _paired(masks, source_images, target_images.shape[0])
    return m * source + (1 - m) * target_images


def mix_maps(masks: torch.Tensor, source_map: torch.Tensor,
             target_map: torch.Tensor) -> torch.Tensor:
    """Per-pixel maps (N, H, W) -- labels, weights -- taken from the source where ``M`` is 1."""
    m, source = _paired(masks, source_map, target_map.shape[0])
    return torch.where(m[:, 0].bool(), source, target_map)
