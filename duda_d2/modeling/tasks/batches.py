"""What flows through a UDA training step, whatever the task: the paired batch, per-pixel
targets (labels or pseudo-labels and their weights), and the ClassMix batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["UDABatch", "DenseTargets", "MixedBatch"]

Outputs = Dict[str, torch.Tensor]


@dataclass
class DenseTargets:
    """A batch's training targets: named per-pixel maps (each (N, ...) with the batch first),
    an optional per-pixel loss weight (N, H, W), and -- for pseudo-targets -- the teacher's
    confident share of pixels (logged as ``pseudo_quality``)."""

    maps: Dict[str, torch.Tensor]
    weight: Optional[torch.Tensor] = None
    quality: Optional[float] = None

    def __getitem__(self, index: slice) -> "DenseTargets":
        """The targets of some images of the batch."""
        return DenseTargets({k: v[index] for k, v in self.maps.items()},
                            None if self.weight is None else self.weight[index], self.quality)

    def with_weight(self, weight: torch.Tensor) -> "DenseTargets":
        return DenseTargets(self.maps, weight, self.quality)

    def weight_or_ones(self) -> torch.Tensor:
        if self.weight is not None:
            return self.weight
        first = next(iter(self.maps.values()))
        return torch.ones(first.shape[:3], device=first.device)

    @staticmethod
    def cat(parts: Sequence["DenseTargets"]) -> "DenseTargets":
        """Concatenate along the batch; a missing weight counts as ones."""
        maps = {k: torch.cat([p.maps[k] for p in parts]) for k in parts[0].maps}
        weights: List[torch.Tensor] = [p.weight_or_ones() for p in parts]
        return DenseTargets(maps, torch.cat(weights))


@dataclass
class UDABatch:
    """Normalised, padded source and target images and the source targets of one step."""

    source_images: torch.Tensor
    source_targets: DenseTargets
    target_images: torch.Tensor


@dataclass
class MixedBatch:
    """A ClassMix batch: the (strongly augmented) mixed images, their mixed targets, the
    masks (1 = source pixel), and the outputs of the student that learned on it (detached)."""

    images: torch.Tensor
    targets: DenseTargets
    masks: torch.Tensor
    student_outputs: Optional[Outputs] = field(default=None)
