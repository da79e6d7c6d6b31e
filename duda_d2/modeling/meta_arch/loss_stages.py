"""Back-propagate each network's losses as soon as they are complete.

A UDA step runs several forward passes (large student on source, on the mix, on the masked
target; small student on each). Summing every loss and calling ``backward`` once keeps all of
their graphs alive together; back-propagating each stage right after its forward frees that
graph before the next forward, so peak memory is the largest single graph, not their sum.
Gradients accumulate in ``.grad``: the result is the gradient of the summed loss (up to
floating-point summation order).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

__all__ = ["LossStages", "Backward"]

Backward = Callable[[torch.Tensor], None]


class LossStages:
    """Collects named losses stage by stage.

    Without ``backward`` (Detectron2's plain ``SimpleTrainer`` contract) the losses keep their
    graphs and the caller sums them. With ``backward`` (``UDATrainStep``), each stage's sum is
    back-propagated at once and the stored losses are detached values for logging.
    """

    def __init__(self, backward: Optional[Backward] = None):
        self.backward = backward
        self.losses: Dict[str, torch.Tensor] = {}

    def add(self, losses: Dict[str, torch.Tensor]) -> None:
        """Record one stage (losses whose graphs nothing later needs)."""
        if self.backward is not None:
            total = sum(losses.values())
            if isinstance(total, torch.Tensor) and total.requires_grad:
                self.backward(total)
            losses = {k: v.detach() for k, v in losses.items()}
        self.losses.update(losses)
