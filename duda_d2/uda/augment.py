"""Strong photometric augmentation of normalised image batches, as DACS's ``strong_transform``
(used by DAFormer and MIC).

Images arrive normalised with the model's pixel mean/std; each image is brought back to
[0, 1], colour-jittered with probability ``jitter_p``, Gaussian-blurred with probability
``blur_p`` and re-normalised. As DACS:
- the two coin flips are drawn once per batch (``coin="batch"``: every image of the batch is
  jittered, or none); ``coin="image"`` flips them per image;
- the jitter is kornia's original colour jitter (``kornia.augmentation.ColorJiggle``, the
  semantics of the kornia 0.5 ``ColorJitter`` MIC pins): brightness *added* (± strength on the
  [0, 1] image), contrast multiplied, saturation scaled in HSV, hue shifted, in a random order,
  with factors drawn per image;
- the blur sigma is drawn per image, the kernel is ``ceil(0.1 · side)`` rounded down to odd,
  per axis.
Every draw comes from torch's global generator, which the trainer seeds per iteration
(``SeedEachIterationHook``), so a resumed run repeats them.

Deliberate difference: MIC's ``*aug`` mask modes blur the whole masked batch with one sigma;
here each image draws its own (the mixed images match DACS exactly, they are augmented one by
one there too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence, Tuple

import torch
from kornia.augmentation import ColorJiggle
from torchvision.transforms.v2 import functional as TF

__all__ = ["StrongAugmentation", "blur_kernel_size", "COINS"]

COINS = ("batch", "image")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


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
    _jitter: ColorJiggle = field(init=False, repr=False)

    def __post_init__(self):
        if self.coin not in COINS:
            raise ValueError(f"augmentation coin {self.coin!r} unknown; use one of {COINS}")
        s = self.jitter_strength
        self._jitter = ColorJiggle(brightness=s, contrast=s, saturation=s, hue=s, p=1.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.pixel_mean, device=images.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.pixel_std, device=images.device).view(1, -1, 1, 1)
        unit = ((images * std + mean) / 255.0).clamp(0, 1)
        coins = self._coins() if self.coin == "batch" else None
        out = torch.stack([self._augment_one(img, coins or self._coins()) for img in unit])
        return (out * 255.0 - mean) / std

    def _coins(self) -> Tuple[bool, bool]:
        """(jitter?, blur?) -- both drawn, in this order, even when a probability is 0."""
        jitter = torch.rand(()).item() < self.jitter_p
        blur = torch.rand(()).item() < self.blur_p
        return jitter and self.jitter_strength > 0, blur

    def _augment_one(self, image: torch.Tensor, coins: Tuple[bool, bool]) -> torch.Tensor:
        jitter, blur = coins
        if jitter:
            image = self._jitter(image[None])[0]
        if blur:
            sigma = _uniform(self.blur_sigma[0], self.blur_sigma[1])
            kernel = [blur_kernel_size(image.shape[-1]), blur_kernel_size(image.shape[-2])]
            image = TF.gaussian_blur(image, kernel, [sigma, sigma])
        return image
