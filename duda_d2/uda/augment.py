"""Strong photometric augmentation of normalised image batches (DACS / DAFormer style).

Images arrive normalised with the model's pixel mean/std; each image is brought back to
[0, 1], colour-jittered (brightness, contrast, saturation, hue, each by a factor within the
strength) with probability ``jitter_p``, Gaussian-blurred with probability ``blur_p`` and
re-normalised. All draws come from ``generator`` (or torch's global generator), so the
trainer's per-iteration seeding makes them reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torchvision.transforms.v2 import functional as TF

__all__ = ["StrongAugmentation"]


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


@dataclass
class StrongAugmentation:
    pixel_mean: Sequence[float]
    pixel_std: Sequence[float]
    jitter_strength: float = 0.2
    jitter_p: float = 0.8
    blur_sigma: Sequence[float] = (0.15, 1.15)
    blur_p: float = 0.5

    def __call__(self, images: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        mean = torch.as_tensor(self.pixel_mean, device=images.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.pixel_std, device=images.device).view(1, -1, 1, 1)
        unit = ((images * std + mean) / 255.0).clamp(0, 1)
        out = torch.stack([self._augment_one(img, generator) for img in unit])
        return (out * 255.0 - mean) / std

    def _augment_one(self, image: torch.Tensor, generator: Optional[torch.Generator]):
        s = self.jitter_strength
        if s > 0 and torch.rand((), generator=generator).item() < self.jitter_p:
            image = TF.adjust_brightness(image, _uniform(1 - s, 1 + s, generator))
            image = TF.adjust_contrast(image, _uniform(1 - s, 1 + s, generator))
            image = TF.adjust_saturation(image, _uniform(1 - s, 1 + s, generator))
            image = TF.adjust_hue(image, _uniform(-s, s, generator))
        if self.blur_p > 0 and torch.rand((), generator=generator).item() < self.blur_p:
            sigma = _uniform(self.blur_sigma[0], self.blur_sigma[1], generator)
            # Kernel about 10 % of the image height, odd (as DACS), at least 3.
            size = max(3, int(0.1 * image.shape[-2]) // 2 * 2 + 1)
            image = TF.gaussian_blur(image, [size, size], [sigma, sigma])
        return image
