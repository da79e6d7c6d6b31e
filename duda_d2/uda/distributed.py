"""Collective operations the UDA pieces need when several processes train one model."""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["sum_across_processes"]


def sum_across_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over the processes of the default group (no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor
