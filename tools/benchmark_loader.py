#!/usr/bin/env python
"""Training-loader throughput (images per second) for several numbers of loader workers.

    python tools/benchmark_loader.py --config-file configs/synthetic/self_training.yaml \
        [--workers 0 2] [--iterations 20] [--warmup 3] [KEY VALUE ...]

Builds the loader the trainer would build (paired source/target batches for UDA
meta-architectures), iterates ``warmup`` untimed then ``iterations`` timed batches, and prints
images per second (source + target images) per worker count.
"""
from __future__ import annotations

import argparse
import sys
import time

from tabulate import tabulate

from duda_d2 import load_config
from duda_d2.engine import UDATrainer


def _images_in(batch) -> int:
    if isinstance(batch, tuple):
        return sum(len(b) for b in batch)
    return len(batch)


def measure(cfg, workers: int, iterations: int, warmup: int) -> float:
    """Images per second of the trainer's loader with ``workers`` worker processes."""
    cfg = cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = workers
    batches = iter(UDATrainer.build_train_loader(cfg))
    for _ in range(warmup):
        next(batches)
    start, images = time.perf_counter(), 0
    for _ in range(iterations):
        images += _images_in(next(batches))
    return images / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    rows = [[w, f"{measure(cfg, w, args.iterations, args.warmup):.1f}"] for w in args.workers]
    print(f"crop {tuple(cfg.INPUT.CROP.SIZE)}, {args.iterations} batches after {args.warmup}")
    print(tabulate(rows, headers=["workers", "images/s"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
