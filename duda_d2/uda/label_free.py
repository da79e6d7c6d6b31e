"""What can be measured on the target without its labels, to choose a checkpoint (issue 19).

For a batch of target images, from the teacher's logits (the network that makes the
pseudo-labels) and the evaluated network's logits (the deployed student):

* ``teacher_confidence``: the teacher's mean max-softmax probability;
* ``confident_share``: the share of pixels whose teacher confidence exceeds the pseudo-label
  threshold -- DAFormer's pseudo-label weight, the part of the target the student learns from;
* ``agreement``: the share of pixels where the evaluated network's class is the teacher's;
* ``student_confidence``: the evaluated network's mean max-softmax probability.

Sums are returned so that batches of any size accumulate exactly (``LabelFreeTally``).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

__all__ = ["SIGNALS", "label_free_sums", "LabelFreeTally"]

SIGNALS = ("teacher_confidence", "confident_share", "agreement", "student_confidence")


def label_free_sums(teacher_logits: torch.Tensor, evaluated_logits: torch.Tensor,
                    threshold: float) -> Dict[str, float]:
    """Per-signal pixel sums and ``pixels`` for (N, C, H, W) logits; the evaluated network's
    logits are resized to the teacher's size when they differ."""
    if evaluated_logits.shape[-2:] != teacher_logits.shape[-2:]:
        evaluated_logits = F.interpolate(evaluated_logits.float(), teacher_logits.shape[-2:],
                                         mode="bilinear", align_corners=False)
    teacher_confidence, teacher_class = teacher_logits.float().softmax(1).max(1)
    student_confidence, student_class = evaluated_logits.float().softmax(1).max(1)
    return {"teacher_confidence": teacher_confidence.sum().item(),
            "confident_share": (teacher_confidence > threshold).sum().item(),
            "agreement": (teacher_class == student_class).sum().item(),
            "student_confidence": student_confidence.sum().item(),
            "pixels": float(teacher_class.numel())}


class LabelFreeTally:
    """Accumulates ``label_free_sums`` over batches; ``means()`` gives the signals."""

    def __init__(self):
        self.sums = {name: 0.0 for name in (*SIGNALS, "pixels")}

    def add(self, sums: Dict[str, float]) -> None:
        for name, value in sums.items():
            self.sums[name] += value

    def means(self) -> Dict[str, float]:
        pixels = self.sums["pixels"]
        if pixels == 0:
            raise ValueError("no target pixel was seen: the label-free signals are undefined")
        return {name: self.sums[name] / pixels for name in SIGNALS}
