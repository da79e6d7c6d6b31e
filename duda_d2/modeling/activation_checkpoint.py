"""Activation checkpointing that leaves a training step's numbers as they are.

``torch.utils.checkpoint`` (non-reentrant) runs a module's forward again in the backward pass.
The RNG state is replayed (dropout and drop-path draw the same masks), but a BatchNorm in
training mode would update its running statistics a second time in that recomputation; here
the recomputation runs with those updates switched off (momentum 0, ``num_batches_tracked``
restored), so losses, gradients *and* running statistics equal those of a plain forward.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..uda.teacher import batchnorm_statistics_frozen

__all__ = ["checkpointed"]


def checkpointed(module: nn.Module, *inputs: torch.Tensor, function: Callable = None):
    """``function(*inputs)`` (default ``module(*inputs)``) with its activations recomputed in
    the backward pass instead of stored; ``module`` holds the parameters and BatchNorm layers
    that ``function`` uses."""
    function = function or module

    def contexts():
        return contextlib.nullcontext(), batchnorm_statistics_frozen(module)

    return checkpoint(function, *inputs, use_reentrant=False, context_fn=contexts)
