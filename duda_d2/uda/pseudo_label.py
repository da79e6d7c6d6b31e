"""Pseudo-labels from teacher logits, with DAFormer's confidence-based quality weight."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from .losses import upsample_logits

__all__ = ["PseudoLabels", "pseudo_labels", "ensemble_logits"]


class PseudoLabels(NamedTuple):
    labels: torch.Tensor      # (N, H, W) long, argmax class
    weight: torch.Tensor      # (N, H, W) float, quality weight of each pixel
    confidence: torch.Tensor  # (N, H, W) float, max softmax probability
    quality: float            # share of confident pixels in the batch


def pseudo_labels(logits: torch.Tensor, threshold: float = 0.968, mode: str = "batch",
                  ignore_top: int = 0, ignore_bottom: int = 0) -> PseudoLabels:
    """``ŷ = argmax softmax(logits)`` and its weight.

    ``mode="batch"``: every pixel gets the batch's share of pixels whose confidence reaches
    ``threshold`` (DAFormer). ``mode="pixel"``: a pixel gets 1 if its own confidence reaches the
    threshold, else 0. Rows within ``ignore_top`` / ``ignore_bottom`` of the border (e.g. the
    Cityscapes ego-car hood) get weight 0.
    """
    if mode not in ("batch", "pixel"):
        raise ValueError(f"pseudo-label weight mode {mode!r} unknown; use 'batch' or 'pixel'")
    probs = torch.softmax(logits.detach().float(), dim=1)
    confidence, labels = probs.max(dim=1)
    confident = (confidence >= threshold).float()
    quality = confident.mean().item()
    weight = confident if mode == "pixel" else torch.full_like(confidence, quality)
    if ignore_top > 0:
        weight[:, :ignore_top] = 0
    if ignore_bottom > 0:
        weight[:, weight.shape[1] - ignore_bottom:] = 0
    return PseudoLabels(labels, weight, confidence, quality)


def ensemble_logits(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Log of the weighted mean of several teachers' softmax probabilities (resized to the
    first's size): feeding it to ``pseudo_labels`` labels with the teachers' mixture."""
    if len(logits) != len(weights) or not logits or sum(weights) <= 0:
        raise ValueError("ensemble needs one positive-sum weight per teacher")
    size = logits[0].shape[-2:]
    total = sum(w * torch.softmax(upsample_logits(z.detach().float(), size), dim=1)
                for z, w in zip(logits, weights))
    return (total / sum(weights)).clamp(min=1e-12).log()
