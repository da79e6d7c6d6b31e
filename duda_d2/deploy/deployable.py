"""What a deployed model runs: uint8 RGB images in, the network's maps at the input size out.

Pixel normalisation and the final upsampling are part of the module, so a device feeds camera
frames as they are and gets per-pixel logits (and, for a panoptic network, its centre heat-map
and offsets) without any of this project's Python code.
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

import torch
from torch import nn

from ..uda.losses import upsample_logits

__all__ = ["DeployableSegmenter", "DeployablePanopticSegmenter", "PANOPTIC_OUTPUTS",
           "deployable_network", "output_names"]

# A panoptic network's maps, in this order; exports return them by name.
PANOPTIC_OUTPUTS = ("sem_seg", "center", "offset")


class DeployableSegmenter(nn.Module):
    """Pixel normalisation + network + upsampling: (N, 3, H, W) uint8 RGB -> (N, C, H, W)
    semantic logits."""

    def __init__(self, network: nn.Module, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float]):
        super().__init__()
        self.network = network
        self.register_buffer("pixel_mean", torch.as_tensor(pixel_mean).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.as_tensor(pixel_std).view(1, -1, 1, 1))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> the network's normalised float input."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) semantic logits at the input size."""
        return upsample_logits(self.network(self.normalise(images))["sem_seg"],
                               images.shape[-2:])


class DeployablePanopticSegmenter(DeployableSegmenter):
    """A panoptic network's three maps at the input size, by name (``PANOPTIC_OUTPUTS``):
    semantic logits, centre heat-map, offsets ``(dy, dx)`` in input pixels (bilinear resizing
    alone keeps them right: the network gives them in input pixels already)."""

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The three maps by name, at the input size."""
        maps = self.network(self.normalise(images))
        return {name: upsample_logits(maps[name], images.shape[-2:])
                for name in PANOPTIC_OUTPUTS}


def deployable_network(network: nn.Module, pixel_mean: Sequence[float],
                       pixel_std: Sequence[float], panoptic: bool
                       ) -> Union[DeployableSegmenter, DeployablePanopticSegmenter]:
    """The deployable module of ``network`` in eval mode."""
    kind = DeployablePanopticSegmenter if panoptic else DeployableSegmenter
    return kind(network, pixel_mean, pixel_std).eval()


def output_names(panoptic: bool) -> tuple:
    """The names of a deployable module's outputs, in order."""
    return PANOPTIC_OUTPUTS if panoptic else ("sem_seg",)
