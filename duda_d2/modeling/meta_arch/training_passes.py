"""How a meta-architecture calls a trainable network in a training step.

One process: the network itself. Several processes: the network's DistributedDataParallel
wrapper (``duda_d2.engine.distributed.wrap_trainable_networks``). DDP all-reduces gradients
during the backward of a forward pass made outside ``no_sync()``; a UDA step back-propagates
several passes of one network (source, mix, masked target), so every pass but the network's
*last* of the step runs under ``no_sync()`` (its gradients accumulate locally) and the backward
of the last one all-reduces the accumulated sum, overlapped with that backward -- DDP's own
gradient-accumulation mechanism. Passes without gradients never go through DDP.
"""
from __future__ import annotations

import contextlib
from typing import Dict

import torch
from torch import nn

__all__ = ["TrainingPasses"]


class TrainingPasses:
    """Routes forward passes to DDP wrappers, keyed by the wrapped network (not a module: the
    wrappers never enter the model's ``state_dict``)."""

    def __init__(self):
        self._wrappers: Dict[int, nn.Module] = {}

    def wrap(self, network: nn.Module, wrapper: nn.Module) -> None:
        self._wrappers[id(network)] = wrapper

    def __call__(self, network: nn.Module, images: torch.Tensor, *, last: bool,
                 with_features: bool = False):
        """``network(images)`` (with its backbone features if asked); ``last``: this is the
        network's last pass with gradients in this step, whose backward reduces them."""
        wrapper = self._wrappers.get(id(network))
        if wrapper is None or not torch.is_grad_enabled():
            return network(images, with_features=with_features)
        with contextlib.nullcontext() if last else wrapper.no_sync():
            return wrapper(images, with_features=with_features)
