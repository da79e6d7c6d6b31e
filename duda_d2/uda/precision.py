"""Reduced-precision forward passes of frozen networks (teachers, FD's ImageNet reference)."""
from __future__ import annotations

import contextlib
from typing import ContextManager, Dict

import torch

__all__ = ["PRECISIONS", "autocast_to", "float_outputs"]

# "" = float32 (no autocast); the others: torch.autocast's dtype.
PRECISIONS = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_to(precision: str, device: torch.device) -> ContextManager:
    """``torch.autocast`` to ``precision`` on ``device``'s type (a no-op context for "");
    weights stay float32, only the computation is in reduced precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} unknown; use one of {list(PRECISIONS)}")
    if not precision:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def float_outputs(outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Every floating-point map as float32 (what the losses and pseudo-labels expect)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in outputs.items()}
