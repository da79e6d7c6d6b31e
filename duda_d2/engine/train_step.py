"""``UDATrainStep``: Detectron2's training step with per-stage backward, AMP and several
processes.

Detectron2's ``SimpleTrainer``/``AMPTrainer`` sum the loss dict and call ``backward`` once, so
every forward graph of a UDA step (up to seven passes through three networks) is alive at the
same time. Here the meta-architecture receives a ``backward`` function and back-propagates each
stage as soon as it is complete (``LossStages``); gradients accumulate as they would for the
summed loss. AMP (autocast + gradient scaler) and Detectron2's gradient clipping (which wraps
``optimizer.step``) are kept.

With several processes each trainable network runs in its own DistributedDataParallel (see
``engine.distributed``): DDP averages the gradients during the backward passes, and after the
optimiser step every process's buffers are averaged, so all processes hold one model.
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional

import torch
from torch import nn

from detectron2.engine import SimpleTrainer

from .distributed import average_buffers

__all__ = ["UDATrainStep", "amp_dtype"]


def amp_dtype(precision: str) -> torch.dtype:
    """``SOLVER.AMP.PRECISION`` as a dtype."""
    choices = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if precision not in choices:
        raise ValueError(f"SOLVER.AMP.PRECISION={precision!r}; use one of {sorted(choices)}")
    return choices[precision]


class UDATrainStep(SimpleTrainer):
    """One optimisation step: forward with per-stage backward (or one backward of the summed
    losses; DDP averages gradients in either), clipping (in ``optimizer.step``), AMP, and the
    buffers averaged across processes."""

    def __init__(self, model: nn.Module, data_loader, optimizer: torch.optim.Optimizer, *,
                 backward_per_stage: bool = True, amp: Optional[torch.dtype] = None):
        super().__init__(model, data_loader, optimizer)
        self.backward_per_stage = backward_per_stage
        self.amp = amp
        self.device_type = next(model.parameters()).device.type
        self.grad_scaler = (torch.amp.GradScaler(self.device_type)
                            if amp == torch.float16 else None)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate one loss (scaled under fp16 AMP), outside autocast."""
        if self.grad_scaler is not None:
            loss = self.grad_scaler.scale(loss)
        with torch.autocast(self.device_type, enabled=False):
            loss.backward()

    def run_step(self) -> None:
        assert self.model.training, "[UDATrainStep] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss_dict = self.model(data, backward=self.backward if self.backward_per_stage
                                   else None)
        if not self.backward_per_stage:
            self.backward(sum(loss_dict.values()))
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        average_buffers(self.model)

    def state_dict(self):
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
