"""Networks that never receive gradients: frozen copies and the teacher's evaluation mode."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn

__all__ = ["frozen_copy", "teacher_mode"]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy that never receives gradients (teachers, the ImageNet feature reference)."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@contextlib.contextmanager
def teacher_mode(network: nn.Module, bn: str = "batch") -> Iterator[nn.Module]:
    """Evaluation mode (no dropout, no drop-path) for a no-grad teacher pass; with
    ``bn="batch"`` its BatchNorm layers normalise with the batch's statistics without
    touching their running averages (nor their batch counters). The previous modes are
    restored afterwards."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    batch_norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in batch_norms]
    counts = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
              for m in batch_norms]
    if bn == "batch":
        for m in batch_norms:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        # inference_mode, not no_grad: no autograd bookkeeping at all (no version counters).
        # Its outputs may be read by losses but never saved for backward, which teacher
        # signals never are (they are targets).
        with torch.inference_mode():
            yield network
    finally:
        for m, momentum, count in zip(batch_norms, momenta, counts):
            m.momentum = momentum
            if count is not None:  # a training-mode BatchNorm counts batches even at momentum 0
                m.num_batches_tracked.copy_(count)
        for m, training in modes:
            m.training = training
