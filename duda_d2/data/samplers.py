"""Infinite training samplers whose every draw is a pure function of (seed, position).

Position ``p`` is the index of a sample in the *global* stream of one training run (all
processes together): sample ``p`` is the same whatever the number of processes or loader
workers, and a run resumed at iteration ``k`` continues at ``p = k * total_batch`` -- the
exact stream an uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PositionalSampler", "UniformSampler", "RareClassSampler", "rcs_class_probabilities"]


def position_rng(seed: int, position: int, stream: int = 0) -> np.random.Generator:
    """A generator owned by one position of one stream (independent of every other)."""
    return np.random.default_rng([seed, stream, position])


class PositionalSampler:
    """Maps a global stream position to a dataset index."""

    def __len__(self) -> int:  # size of the underlying dataset
        raise NotImplementedError

    def index_at(self, position: int) -> int:
        raise NotImplementedError

    def draw(self, position: int) -> Tuple[int, Optional[int]]:
        """(dataset index, the class the image was drawn for, or None)."""
        return self.index_at(position), None


class UniformSampler(PositionalSampler):
    """Epochs of seeded random permutations (every image once per epoch), or in order."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:
        return self.size

    def index_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:  # positions arrive in order: one permutation per epoch
            self._epoch, self._perm = epoch, position_rng(self.seed, epoch, 1).permutation(self.size)
        return int(self._perm[offset])


def rcs_class_probabilities(class_pixels: Mapping[int, int], temperature: float,
                            classes: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """DAFormer's rare-class sampling distribution: softmax over ``classes`` (default: all) of
    (1 - f_c) / T, where f_c is class c's share of all labelled pixels."""
    total = sum(class_pixels.values())
    if total == 0:
        raise ValueError("rare class sampling needs labelled pixels; the statistics hold none")
    classes = sorted(class_pixels) if classes is None else sorted(classes)
    logits = np.array([(1.0 - class_pixels[c] / total) / temperature for c in classes])
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return dict(zip(classes, probs.tolist()))


class RareClassSampler(PositionalSampler):
    """Draw a class c with ``P(c) ∝ exp((1 - f_c) / T)``, then uniformly an image holding more
    than ``min_pixels`` pixels of c (classes with no such image are never drawn).

    ``image_class_pixels[i]`` gives {class: pixels} of dataset image ``i``.
    """

    def __init__(self, image_class_pixels: Sequence[Mapping[int, int]], temperature: float = 0.01,
                 min_pixels: int = 3000, seed: int = 0):
        self.size, self.seed = len(image_class_pixels), seed
        totals: Dict[int, int] = {}
        for counts in image_class_pixels:
            for c, n in counts.items():
                totals[c] = totals.get(c, 0) + n
        self.images_with_class: Dict[int, np.ndarray] = {}
        for c in sorted(totals):
            holders = [i for i, counts in enumerate(image_class_pixels)
                       if counts.get(c, 0) > min_pixels]
            if holders:
                self.images_with_class[c] = np.array(holders)
        if not self.images_with_class:
            raise ValueError(f"no image holds more than {min_pixels} pixels of any class; lower "
                             f"DATALOADER.RCS.MIN_PIXELS")
        probs = rcs_class_probabilities(totals, temperature, list(self.images_with_class))
        self.classes = np.array(list(probs))
        self.class_probs = np.array(list(probs.values()))

    def __len__(self) -> int:
        return self.size

    def index_at(self, position: int) -> int:
        return self.draw(position)[0]

    def draw(self, position: int) -> Tuple[int, Optional[int]]:
        """The image and the rare class it was drawn for (the mapper's crop should keep it)."""
        rng = position_rng(self.seed, position, 2)
        c = int(self.classes[rng.choice(len(self.classes), p=self.class_probs)])
        holders = self.images_with_class[c]
        return int(holders[rng.integers(len(holders))]), c
