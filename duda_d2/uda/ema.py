"""Exponential moving average of a network's weights (the mean teacher)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_alpha", "ema_update"]


def ema_alpha(iteration: int, alpha: float) -> float:
    """``min(1 - 1/(t+1), alpha)``: 0 at t = 0 (the teacher starts as a copy of the student),
    then the teacher forgets slowly, up to ``alpha``."""
    return min(1.0 - 1.0 / (iteration + 1), alpha)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``θ_t ← α θ_t + (1 - α) θ_s`` for parameters and floating-point buffers (BatchNorm
    running statistics); integer buffers (``num_batches_tracked``) are copied.

    With PyTorch's multi-tensor operations (``torch._foreach_*``): a handful of kernel
    launches for the ~1100 tensors of a MiT-B5 + DAFormer network instead of two per tensor in
    a Python loop, with the same result bit for bit (``tools/benchmark_ema.py`` times both)."""
    teacher_tensors = list(teacher.parameters())
    student_tensors = [p.detach() for p in student.parameters()]
    copies = []
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            teacher_tensors.append(t)
            student_tensors.append(s)
        else:
            copies.append((t, s))
    if teacher_tensors:
        torch._foreach_mul_(teacher_tensors, alpha)
        torch._foreach_add_(teacher_tensors, student_tensors, alpha=1.0 - alpha)
    for t, s in copies:
        t.copy_(s)
