#!/usr/bin/env python
"""The mean teacher's EMA update: a Python loop over every tensor vs PyTorch's multi-tensor
(``torch._foreach_*``) operations, side by side on one network pair.

    python tools/benchmark_ema.py [--config-file configs/networks/mit_b5_daformer.yaml] \
        [--runs 20] [--warmup 3] [--device cpu|cuda]

Builds the network twice (student and teacher, random weights), then times
``duda_d2.uda.ema.ema_update`` (multi-tensor, what training uses) and the per-tensor loop it
replaced, alternating, and checks that both give the same teacher bit for bit.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from tabulate import tabulate

from duda_d2 import load_config
from duda_d2.modeling.network import build_segmentation_network
from duda_d2.uda.ema import ema_update


@torch.no_grad()
def ema_update_loop(teacher: torch.nn.Module, student: torch.nn.Module, alpha: float) -> None:
    """The per-tensor loop (the implementation before the multi-tensor one)."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.mul_(alpha).add_(s, alpha=1.0 - alpha)
        else:
            t.copy_(s)


def _time(update, teacher, student, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    update(teacher, student, 0.999)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="configs/networks/mit_b5_daformer.yaml")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config(args.config_file, ["MODEL.BACKBONE.WEIGHTS", ""])
    torch.manual_seed(0)
    student = build_segmentation_network(cfg).to(device)
    teachers = {"loop": copy.deepcopy(student), "foreach": copy.deepcopy(student)}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    updates = {"loop": ema_update_loop, "foreach": ema_update}
    for name, update in updates.items():
        for _ in range(args.warmup):
            update(teachers[name], student, 0.999)
    seconds = {name: [] for name in updates}
    for _ in range(args.runs):  # alternate against machine noise
        for name, update in updates.items():
            seconds[name].append(_time(update, teachers[name], student, device))
    same = all(torch.equal(a, b) for a, b in zip(teachers["loop"].state_dict().values(),
                                                  teachers["foreach"].state_dict().values()))
    tensors = len(list(student.parameters())) + len(list(student.buffers()))
    base = statistics.median(seconds["loop"])
    rows = [[name, f"{statistics.median(s) * 1000:.1f}", f"{min(s) * 1000:.1f}",
             f"{base / statistics.median(s):.2f}x"] for name, s in seconds.items()]
    params = sum(p.numel() for p in student.parameters()) / 1e6
    print(f"EMA update of {args.config_file} ({params:.1f}M parameters, {tensors} tensors), "
          f"{args.runs} runs after {args.warmup} warm-up, {device}, torch threads "
          f"{torch.get_num_threads()}; identical teachers: {same}")
    print(tabulate(rows, headers=["update", "median ms", "min ms", "speed-up vs loop"],
                   tablefmt="github"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
