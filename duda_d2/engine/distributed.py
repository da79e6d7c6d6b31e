"""Several training processes on PyTorch's own ``DistributedDataParallel``.

A UDA model holds several networks; each *trainable* one (``model.trainable_networks()``) is
wrapped in its own DDP, which all-reduces its gradients bucket by bucket while the backward of
the network's last forward pass of the step runs (``TrainingPasses`` puts the earlier passes
under ``no_sync()``). Frozen networks (EMA teachers, the ImageNet feature reference, extra
teachers) are not wrapped: they follow from identical trained weights.

Buffers are not gradients: every process updates its BatchNorm running statistics with its own
share of the batch, and an EMA teacher averages those. ``average_buffers`` runs after every
optimiser step so that all processes hold one model at every step boundary (checkpoints,
teachers, evaluation); ``MODEL.SYNC_BN`` (CUDA only) normalises with the global batch instead.
"""
from __future__ import annotations

import inspect
import logging
from typing import List

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel

from detectron2.utils import comm

__all__ = ["broadcast_state", "average_buffers", "wrap_trainable_networks",
           "convert_sync_batchnorm"]

logger = logging.getLogger(__name__)

_BUCKET_BYTES = 32 * 1024 * 1024


def _distributed() -> bool:
    return comm.get_world_size() > 1


def broadcast_state(model: nn.Module) -> None:
    """Give every process rank 0's parameters and buffers (every network, frozen ones too:
    the processes were seeded differently, so their random initialisations differ)."""
    if not _distributed():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def _buckets(tensors: List[torch.Tensor]):
    bucket, size = [], 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (t.dtype != bucket[0].dtype or size + nbytes > _BUCKET_BYTES):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


@torch.no_grad()
def average_buffers(model: nn.Module) -> None:
    """Average every floating-point buffer across processes (BatchNorm running statistics of
    all networks, teachers' included) and give every process rank 0's other buffers (batch
    counters), so that all processes hold the same state."""
    if not _distributed():
        return
    world = comm.get_world_size()
    buffers = list(model.buffers())
    floats = sorted((b for b in buffers if b.is_floating_point()), key=lambda b: str(b.dtype))
    for bucket in _buckets(floats):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat /= world
        for buffer, averaged in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            buffer.copy_(averaged)
    for buffer in (b for b in buffers if not b.is_floating_point()):
        as_int = buffer.to(torch.int64)  # gloo has no bool all-reduce/broadcast
        dist.broadcast(as_int, src=0)
        buffer.copy_(as_int.to(buffer.dtype))


def convert_sync_batchnorm(model: nn.Module, device: str) -> None:
    """Replace the BatchNorm layers of the trainable networks by ``torch.nn.SyncBatchNorm``
    (same parameters and buffers, so the optimiser and the teachers are unaffected)."""
    if torch.device(device).type != "cuda":
        raise ValueError("MODEL.SYNC_BN needs CUDA: torch's SyncBatchNorm refuses CPU tensors. "
                         "Leave MODEL.SYNC_BN False on the CPU (BatchNorm statistics are then "
                         "averaged across processes after every step).")
    for network in model.trainable_networks():
        for name, child in list(network.named_children()):
            setattr(network, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))


def _ddp_kwargs() -> dict:
    """Buffers are averaged after each step (``average_buffers``), not broadcast by DDP at
    every forward (``forward_sync_buffers`` on newer torch, ``broadcast_buffers`` before)."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def wrap_trainable_networks(model: nn.Module, *, find_unused_parameters: bool = False) -> None:
    """Wrap each trainable network of ``model`` in DDP and route the model's training passes
    through the wrappers (``model.passes``). No-op in one process."""
    if not _distributed():
        return
    device = next(model.parameters()).device
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None  # DDP rejects device_ids for CPU modules
    for network in model.trainable_networks():
        model.passes.wrap(network, DistributedDataParallel(
            network, device_ids=device_ids, find_unused_parameters=find_unused_parameters,
            **_ddp_kwargs()))
    logger.info(f"DistributedDataParallel over {comm.get_world_size()} processes for "
                f"{len(model.trainable_networks())} trainable network(s)")
