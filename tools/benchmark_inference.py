#!/usr/bin/env python
"""Inference throughput and peak memory of the models built by a list of configs.

    python tools/benchmark_inference.py --config-file configs/networks/mit_b0_segformer.yaml \
        --config-file configs/networks/mit_b5_daformer.yaml [--height 512 --width 1024] \
        [--mode whole|slide] [--batch 1] [--runs 5] [--warmup 1] [--device cpu|cuda] \
        [KEY VALUE ...]

Each config is measured in its own fresh process (so the CPU's peak-RSS figure belongs to that
model alone): the evaluated network runs whole-image or sliding-window inference (``MODEL.INFERENCE.*``:
windows are accumulated one at a time, so ``--mode slide --height 1024 --width 2048`` shows
the memory of Cityscapes-resolution evaluation) on a random batch, ``warmup``
untimed then ``runs`` timed passes; the table gives min/median/max seconds per batch, median
images per second, peak memory, and the throughput ratio of the first config to each.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys

import torch
from tabulate import tabulate

from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.modeling.network import named_networks
from duda_d2.utils.benchmark import config_label, peak_memory_mib, reset_peak_memory, time_runs


def measure(config_file: str, opts, height: int, width: int, batch: int, runs: int,
            warmup: int, device: str) -> dict:
    """Seconds per batch and peak memory of the config's (first) network at inference."""
    torch.manual_seed(0)
    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", device])
    model = build_model(cfg).eval()
    name, network = named_networks(model)[0]
    dev = torch.device(device)
    images = torch.randn(batch, 3, height, width, device=dev)
    reset_peak_memory(dev)

    @torch.inference_mode()
    def step():
        return model.inference_settings(network, images)

    timing = time_runs(step, runs, warmup, dev)
    return {"config": config_label(config_file), "network": name,
            "seconds": timing.seconds, "summary": timing.summary(),
            "images_per_s": batch / timing.median, "peak_mib": peak_memory_mib(dev)}


def _measure_in_fresh_process(*args) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(measure, args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, action="append")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--mode", choices=["whole", "slide"], default="whole",
                        help="MODEL.INFERENCE.MODE (slide: MODEL.INFERENCE.CROP_SIZE/STRIDE)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    opts = list(args.opts) + ["MODEL.INFERENCE.MODE", args.mode]
    results = [_measure_in_fresh_process(c, opts, args.height, args.width, args.batch,
                                         args.runs, args.warmup, args.device)
               for c in args.config_file]
    base = results[0]["images_per_s"]
    rows = [[r["config"], r["summary"], f"{r['images_per_s']:.2f}", f"{r['peak_mib']:.0f}",
             f"{base / r['images_per_s']:.2f}x" if r is not results[0] else "1.00x"]
            for r in results]
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"{args.mode} inference, {args.height}x{args.width} (H x W), batch {args.batch}, "
          f"{args.runs} runs after {args.warmup} warm-up, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(tabulate(rows, headers=["config", "s/batch min/med/max", "images/s",
                                  f"{memory} MiB", "first is faster by"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
