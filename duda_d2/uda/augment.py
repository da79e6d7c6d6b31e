"""Strong photometric augmentation of normalised image batches (DACS / DAFormer / MIC style).

Images arrive normalised with the model's pixel mean/std; each image is brought back to
[0, 1], colour-jittered (brightness, contrast, saturation, hue, each by a factor within the
strength) with probability ``jitter_p``, Gaussian-blurred with probability ``blur_p`` and
re-normalised. As DACS's ``strong_transform``, the two coin flips are drawn once per batch
(``coin="batch"``: every image of the batch is jittered, or none) while the jitter factors and
the blur sigma are drawn per image; ``coin="image"`` flips the coins per image. All draws come
from ``generator`` (or torch's global generator), so the trainer's per-iteration seeding makes
them reproducible.

Deliberate difference: DACS uses kornia's ``ColorJitter``; this uses torchvision's functional
ops in a fixed order (brightness, contrast, saturation, hue) -- same factor ranges, no kornia
dependency.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torchvision.transforms.v2 import functional as TF

__all__ = ["StrongAugmentation", "blur_kernel_size", "COINS"]

COINS = ("batch", "image")


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def blur_kernel_size(length: int) -> int:
    """DACS's blur kernel for an image side of ``length`` pixels: ``ceil(0.1 · length)``,
    minus one when even (so always odd, at least 1)."""
    size = math.ceil(0.1 * length)
    return max(1, size if size % 2 else size - 1)


@dataclass
class StrongAugmentation:
    pixel_mean: Sequence[float]
    pixel_std: Sequence[float]
    jitter_strength: float = 0.2
    jitter_p: float = 0.8
    blur_sigma: Sequence[float] = (0.15, 1.15)
    blur_p: float = 0.5
    coin: str = "batch"

    def __post_init__(self):
        if self.coin not in COINS:
            raise ValueError(f"augmentation coin {self.coin!r} unknown; use one of {COINS}")

    def __call__(self, images: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        mean = torch.as_tensor(self.pixel_mean, device=images.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.pixel_std, device=images.device).view(1, -1, 1, 1)
        unit = ((images * std + mean) / 255.0).clamp(0, 1)
        coins = self._coins(generator) if self.coin == "batch" else None
        out = torch.stack([self._augment_one(img, coins or self._coins(generator), generator)
                           for img in unit])
        return (out * 255.0 - mean) / std

    def _coins(self, generator: Optional[torch.Generator]):
        """(jitter?, blur?) -- both drawn, in this order, even when a probability is 0."""
        jitter = torch.rand((), generator=generator).item() < self.jitter_p
        blur = torch.rand((), generator=generator).item() < self.blur_p
        return jitter and self.jitter_strength > 0, blur

    def _augment_one(self, image: torch.Tensor, coins, generator: Optional[torch.Generator]):
        jitter, blur = coins
        s = self.jitter_strength
        if jitter:
            image = TF.adjust_brightness(image, _uniform(1 - s, 1 + s, generator))
            image = TF.adjust_contrast(image, _uniform(1 - s, 1 + s, generator))
            image = TF.adjust_saturation(image, _uniform(1 - s, 1 + s, generator))
            image = TF.adjust_hue(image, _uniform(-s, s, generator))
        if blur:
            sigma = _uniform(self.blur_sigma[0], self.blur_sigma[1], generator)
            kernel = [blur_kernel_size(image.shape[-1]), blur_kernel_size(image.shape[-2])]
            image = TF.gaussian_blur(image, kernel, [sigma, sigma])
        return image
