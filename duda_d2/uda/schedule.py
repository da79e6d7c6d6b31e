"""Gradual distillation: the weight β(t) moving the small student from pseudo-labels to KD."""
from __future__ import annotations

import math

__all__ = ["SCHEDULES", "distill_beta"]

SCHEDULES = ("constant", "linear", "cosine")


def distill_beta(iteration: int, pre_adaptation_iters: int, ramp_iters: int,
                 beta_max: float = 1.0, schedule: str = "linear") -> float:
    """0 during pre-adaptation (``t < T_pre``); then rises to ``beta_max`` over ``T_ramp``
    iterations (``linear`` or half-``cosine``; ``constant`` jumps at ``T_pre``) and stays."""
    if schedule not in SCHEDULES:
        raise ValueError(f"distillation schedule {schedule!r} unknown; use one of {SCHEDULES}")
    if iteration < pre_adaptation_iters:
        return 0.0
    if schedule == "constant" or ramp_iters <= 0:
        return beta_max
    progress = min(1.0, (iteration - pre_adaptation_iters) / ramp_iters)
    if schedule == "cosine":
        progress = 0.5 * (1.0 - math.cos(math.pi * progress))
    return beta_max * progress
