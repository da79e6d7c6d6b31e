"""Networks that never receive gradients: frozen copies and the teacher's evaluation mode."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn

__all__ = ["frozen_copy", "teacher_mode", "batchnorm_statistics_frozen"]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy that never receives gradients (teachers, the ImageNet feature reference)."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@contextlib.contextmanager
def batchnorm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Inside, ``module``'s BatchNorm layers normalise as their mode says (batch statistics in
    training mode) but leave their running averages and batch counters as they were
    (momentum 0: ``running = (1 - 0) * running + 0 * batch``; counters restored)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else
              m.num_batches_tracked.clone()) for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:  # a training-mode BatchNorm counts batches even at momentum 0
                m.num_batches_tracked.copy_(count)


@contextlib.contextmanager
def teacher_mode(network: nn.Module, bn: str = "batch") -> Iterator[nn.Module]:
    """Evaluation mode (no dropout, no drop-path) for a no-grad teacher pass; with
    ``bn="batch"`` its BatchNorm layers normalise with the batch's statistics without
    touching their running averages (nor their batch counters). The previous modes are
    restored afterwards."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    if bn == "batch":
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    try:
        # inference_mode, not no_grad: no autograd bookkeeping at all (no version counters).
        # Its outputs may be read by losses but never saved for backward, which teacher
        # signals never are (they are targets).
        with batchnorm_statistics_frozen(network), torch.inference_mode():
            yield network
    finally:
        for m, training in modes:
            m.training = training
