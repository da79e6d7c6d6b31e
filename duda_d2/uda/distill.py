"""Knowledge distillation and inconsistency class weights for the small student."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from .losses import upsample_logits

__all__ = ["pixel_kl", "weighted_kd", "class_overlap_counts", "class_disagreement",
           "InconsistencyWeights", "label_weights"]


def pixel_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor:
    """``τ² KL(softmax(z_t/τ) ‖ softmax(z_s/τ))`` per pixel, (N, H, W); the teacher logits
    are resized to the student's and never receive gradients."""
    teacher_logits = upsample_logits(teacher_logits.detach().float(), student_logits.shape[-2:])
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature ** 2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def weighted_kd(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                pixel_weight: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over pixels of ``pixel_weight · KL_τ``, at the resolution of ``pixel_weight``
    (both logits are resized to it)."""
    size = pixel_weight.shape[-2:]
    kl = pixel_kl(upsample_logits(teacher_logits, size), upsample_logits(student_logits, size),
                  temperature)
    return (pixel_weight * kl).mean()


def label_weights(class_weights: torch.Tensor, labels: torch.Tensor,
                  ignore_index: int = 255) -> torch.Tensor:
    """``c[y]`` per pixel; pixels without a class (``ignore_index``) get weight 1."""
    valid = labels != ignore_index
    return torch.where(valid, class_weights[torch.where(valid, labels, 0).long()],
                       torch.ones((), device=labels.device, dtype=class_weights.dtype))


def class_overlap_counts(prediction: torch.Tensor, reference: torch.Tensor, num_classes: int,
                         ignore_index: int = 255) -> torch.Tensor:
    """(2, num_classes) per-class intersection and union pixel counts of two label maps."""
    valid = reference != ignore_index
    pred, ref = prediction[valid].long(), reference[valid].long()
    inter = torch.bincount(pred[pred == ref], minlength=num_classes).float()
    union = (torch.bincount(pred, minlength=num_classes)
             + torch.bincount(ref, minlength=num_classes)).float() - inter
    return torch.stack([inter, union])


def class_disagreement(prediction: torch.Tensor, reference: torch.Tensor, num_classes: int,
                       ignore_index: int = 255,
                       sum_counts: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
    """Per class ``1 - IoU(prediction, reference)`` and which classes occur in either map.

    ``sum_counts`` sums the intersection/union counts in place over processes first, so
    that every process computes the IoU of the global batch."""
    counts = class_overlap_counts(prediction, reference, num_classes, ignore_index)
    if sum_counts is not None:
        sum_counts(counts)
    inter, union = counts
    present = union > 0
    return 1.0 - inter / union.clamp(min=1), present


class InconsistencyWeights(nn.Module):
    """Class weights that up-weight classes the small student has not adapted to yet.

    ``u_c`` (EMA with ``momentum`` of per-batch ``1 - IoU_c`` between the small student's and
    the teacher's target labels) gives ``c_c = 1 + γ (u_c / mean(u) - 1)``, clipped to
    ``clip`` and renormalised to mean 1 over the classes seen so far; unseen classes get 1.
    Its state is two buffers of its own, so checkpoints (and ``--resume``) carry it.
    """

    def __init__(self, num_classes: int, gamma: float = 1.0, momentum: float = 0.99,
                 clip=(0.5, 3.0)):
        super().__init__()
        self.gamma, self.momentum, self.clip = gamma, momentum, tuple(clip)
        self.register_buffer("disagreement", torch.zeros(num_classes))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @property
    def enabled(self) -> bool:
        return self.gamma > 0

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, reference: torch.Tensor,
               ignore_index: int = 255,
               sum_counts: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        """One batch's ``1 - IoU`` into the EMA; ``sum_counts`` (e.g. an all-reduce) makes
        the IoU that of the global batch when several processes train."""
        u, present = class_disagreement(prediction, reference, len(self.disagreement),
                                        ignore_index, sum_counts)
        first = present & ~self.seen
        old = present & self.seen
        self.disagreement[first] = u[first]
        self.disagreement[old] = (self.momentum * self.disagreement[old]
                                  + (1 - self.momentum) * u[old])
        self.seen |= present

    @torch.no_grad()
    def weights(self) -> torch.Tensor:
        c = torch.ones_like(self.disagreement)
        if self.gamma == 0 or not self.seen.any():
            return c
        u = self.disagreement[self.seen]
        mean = u.mean()
        if mean <= 0:  # perfect agreement everywhere: nothing to up-weight
            return c
        w = (1 + self.gamma * (u / mean - 1)).clamp(*self.clip)
        c[self.seen] = w / w.mean()
        return c
