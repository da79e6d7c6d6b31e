"""Measurement helpers for the benchmark tools: timed runs and peak memory."""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, List

import torch

__all__ = ["Timing", "time_runs", "peak_memory_mib", "reset_peak_memory", "config_label"]


@dataclass
class Timing:
    seconds: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def summary(self) -> str:
        return f"{min(self.seconds):.3f}/{self.median:.3f}/{max(self.seconds):.3f}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(step: Callable[[], object], runs: int, warmup: int,
              device: torch.device) -> Timing:
    """Wall-clock seconds of ``runs`` calls of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA max allocated on a GPU; the process's peak resident set size on the CPU.

    The CPU figure is the whole process's high-water mark, so each measured configuration runs
    in a fresh process (the benchmark tools do that).
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def config_label(config_file: str) -> str:
    """A config's name for tables and run folders: its path below a ``configs`` folder without
    ``.yaml`` (``gta2cs/duda``, so that ``gta2cs/duda.yaml`` and ``syn2cs/duda.yaml`` differ),
    else its file name."""
    parts = os.path.normpath(os.path.abspath(config_file)).split(os.sep)
    stem = os.path.splitext(parts[-1])[0]
    if "configs" in parts[:-1]:
        below = parts[len(parts) - parts[::-1].index("configs"):-1]
        return "/".join(below + [stem])
    return stem
