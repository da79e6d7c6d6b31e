"""``UDATrainStep``: Detectron2's training step with per-stage backward, AMP and gradient
averaging across processes.

Detectron2's ``SimpleTrainer``/``AMPTrainer`` sum the loss dict and call ``backward`` once, so
every forward graph of a UDA step (up to seven passes through three networks) is alive at the
same time. Here the meta-architecture receives a ``backward`` function and back-propagates each
stage as soon as it is complete (``LossStages``); gradients accumulate as they would for the
summed loss. AMP (autocast + gradient scaler) and Detectron2's gradient clipping (which wraps
``optimizer.step``) are kept.

Several backward passes per forward do not fit DDP's reducer (one backward per forward), so
with several processes the model is not DDP-wrapped: its state is broadcast from rank 0 once
and the gradients are averaged by one bucketed all-reduce after the step's backward passes.
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

__all__ = ["UDATrainStep", "average_gradients", "broadcast_state", "amp_dtype"]

_BUCKET_BYTES = 64 * 1024 * 1024


def amp_dtype(precision: str) -> torch.dtype:
    """``SOLVER.AMP.PRECISION`` as a dtype."""
    choices = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if precision not in choices:
        raise ValueError(f"SOLVER.AMP.PRECISION={precision!r}; use one of {sorted(choices)}")
    return choices[precision]


def broadcast_state(model: nn.Module) -> None:
    """Give every process rank 0's parameters and buffers (what DDP does at construction)."""
    if comm.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def _buckets(tensors: List[torch.Tensor]) -> Iterable[List[torch.Tensor]]:
    bucket, size = [], 0
    for t in tensors:
        if bucket and (t.dtype != bucket[0].dtype or size + t.numel() * t.element_size()
                       > _BUCKET_BYTES):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over processes. A parameter without a gradient on every process
    (a frozen network) keeps ``grad=None``, so the optimiser skips it as in one process; one
    that has a gradient on some process only is treated as zero elsewhere."""
    world_size = comm.get_world_size()
    if world_size == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                            device=device)
    dist.all_reduce(has_grad)
    grads = []
    for p, count in zip(params, has_grad.tolist()):
        if count == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for bucket in _buckets(grads):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat /= world_size
        for grad, averaged in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(averaged)


class UDATrainStep(SimpleTrainer):
    """One optimisation step: forward with per-stage backward (or one backward of the summed
    losses), gradient averaging, clipping (in ``optimizer.step``) and AMP."""

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
        average_gradients(self.model.parameters())
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
