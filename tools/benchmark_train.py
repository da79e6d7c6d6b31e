#!/usr/bin/env python
"""Training-step time and peak memory of several configs, measured side by side.

    python tools/benchmark_train.py \
        --config-file configs/gta2cs/self_training.yaml \
        --config-file configs/gta2cs/duda.yaml \
        --config-file configs/gta2cs/duda.yaml SOLVER.BACKWARD_PER_STAGE False \
        [--crop 256] [--batch 2] [--warmup 1] [--steps 3] [--rounds 3] [--processes 1 2]
        [--opts KEY VALUE ...]

Each ``--config-file`` may be followed by ``KEY VALUE`` overrides of its own; ``--opts`` apply
to all. By default every config trains on the embedded synthetic data (resized so that
``--crop`` square crops fit), from random weights (weight files are not needed), at an
iteration in the distillation stage (``SOLVER.MAX_ITER // 2``), the most expensive one.

Every (round, config) runs in a fresh process -- configs alternate round by round against
machine noise, and each process's peak memory is its own: CUDA max allocated on a GPU, peak
RSS on the CPU. Prints per config: median seconds per step (min/median/max of the rounds'
medians), images per second (source + target images), peak memory, and both ratios to the
first config.

``--processes 1 2`` runs every config with each number of training processes (Detectron2's
``launch``: gloo on the CPU, NCCL on GPUs; each trainable network in its own DDP) at the same
*global* batch, so the rows compare one process with data-parallel training. On the CPU the
cores are shared out between the processes (``torch.set_num_threads``); the memory column is
then the sum over the processes (each its own peak RSS), on GPUs the largest process's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tabulate import tabulate  # noqa: E402

SYNTHETIC = ["DATASETS.TRAIN", ("synthetic_uda_source_train",),
             "DATASETS.SOURCE_TRAIN", ("synthetic_uda_source_train",),
             "DATASETS.TARGET_TRAIN", ("synthetic_uda_target_train",),
             "DATASETS.TEST", (), "DATALOADER.RCS.ENABLED", False]


def benchmark_config(config_file: str, opts: List[str], args) -> "object":
    """The config as trained by the benchmark: synthetic data at ``--crop``, no weight files,
    batch ``--batch`` + ``--batch``, the device there is."""
    import torch

    from duda_d2 import load_config

    crop = args.crop
    resize = (crop, (crop * 4 + 2) // 3)  # the synthetic 3:4 aspect, cropped to a square
    cuda = torch.cuda.is_available()
    defaults = [
        "MODEL.DEVICE", "cuda" if cuda else "cpu", "MODEL.WEIGHTS", "",
        "MODEL.BACKBONE.WEIGHTS", "", "MODEL.UDA.FD_RANDOM_REFERENCE", True,
        "INPUT.CROP.SIZE", (crop, crop),
        "INPUT.SOURCE_SIZE", resize, "INPUT.TARGET_SIZE", resize,
        "SOLVER.IMS_PER_BATCH", args.batch, "DATALOADER.SOURCE_IMS_PER_BATCH", args.batch,
        "DATALOADER.TARGET_IMS_PER_BATCH", args.batch,
        "DATALOADER.NUM_WORKERS", args.workers if args.workers >= 0 else (4 if cuda else 0),
        "OUTPUT_DIR", os.path.join(args.output_dir, "trainer"), "TEST.EVAL_PERIOD", 0,
    ]
    data = [] if args.real_data else SYNTHETIC
    cfg = load_config(config_file, data + defaults + list(args.opts) + list(opts))
    if not args.real_data:
        large_opts = list(cfg.MODEL.DUDA.LARGE_NETWORK_OPTS)
        for i in range(0, len(large_opts) - 1, 2):
            if large_opts[i] == "MODEL.BACKBONE.WEIGHTS":
                large_opts[i + 1] = ""
        cfg.defrost()
        cfg.MODEL.DUDA.LARGE_NETWORK_OPTS = large_opts
        cfg.MODEL.DUDA.EXTRA_TEACHER_CONFIGS = []
        cfg.MODEL.DUDA.EXTRA_TEACHER_WEIGHTS = []
        cfg.MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS = []
        cfg.freeze()
    return cfg


def worker(config_file: str, opts: List[str], args) -> Dict:
    """Build the trainer, run warm-up then timed steps; step times and peak memory (one
    training process of ``args.processes_run``)."""
    import torch

    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage
    from detectron2.utils.logger import setup_logger

    from duda_d2.engine import UDATrainer
    from duda_d2.utils.benchmark import peak_memory_mib, reset_peak_memory

    setup_logger(name="fvcore", output=None).setLevel("WARNING")
    cfg = benchmark_config(config_file, opts, args)
    if args.processes_run > 1 and cfg.MODEL.DEVICE == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.processes_run))
    seed_all_rng(0)
    trainer = UDATrainer(cfg)
    step = trainer._trainer
    device = torch.device(cfg.MODEL.DEVICE)
    cuda = device.type == "cuda"
    after_build = peak_memory_mib(device)
    reset_peak_memory(device)
    first = cfg.SOLVER.MAX_ITER // 2 if args.iteration < 0 else args.iteration
    times = []
    with EventStorage(first) as storage:
        step.storage = storage
        for i in range(args.warmup + args.steps):
            storage.iter = step.iter = first + i
            start = time.perf_counter()
            step.run_step()
            if cuda:
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
            storage.step()
    images = cfg.DATALOADER.SOURCE_IMS_PER_BATCH + (
        cfg.DATALOADER.TARGET_IMS_PER_BATCH if getattr(trainer.model, "uses_target_data", False)
        else 0)
    # Memory of all processes: RSS adds up on one machine; a GPU holds one process each.
    merge = max if cuda else sum
    peaks = comm.all_gather((after_build, peak_memory_mib(device)))
    return {"times": times, "images_per_step": images,
            "after_build_mib": merge(p[0] for p in peaks), "peak_mib": merge(p[1] for p in peaks),
            "kind": "CUDA max allocated" if cuda else "peak RSS",
            "processes": args.processes_run}


def worker_process(config_file: str, opts: List[str], args) -> None:
    """One training process: measure, and rank 0 writes the result."""
    from detectron2.utils import comm

    result = worker(config_file, opts, args)
    if comm.is_main_process():
        with open(args.worker_out, "w") as f:
            json.dump(result, f)


def run_child(config_file: str, opts: List[str], args, out: str) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker-out", out,
           "--config-file", config_file, *opts, "--crop", str(args.crop), "--batch",
           str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--iteration", str(args.iteration), "--workers", str(args.workers),
           "--output-dir", args.output_dir, "--processes-run", str(args.processes_run)]
    if args.real_data:
        cmd.append("--real-data")
    if args.opts:
        cmd += ["--opts", *args.opts]
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"benchmark of {config_file} {' '.join(opts)} failed:\n"
                         f"{result.stdout[-4000:]}")
    with open(out) as f:
        return json.load(f)


def _min_med_max(values: List[float], fmt: str = "{:.2f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                              max(values)))


def summarise(names: List[str], runs: Dict[str, List[Dict]]) -> str:
    rows, base = [], None
    for name in names:
        medians = [statistics.median(r["times"]) for r in runs[name]]
        peaks = [r["peak_mib"] for r in runs[name]]
        step = statistics.median([t for r in runs[name] for t in r["times"]])
        peak = statistics.median(peaks)
        base = base or (step, peak)
        rows.append([name, _min_med_max(medians), f"{runs[name][0]['images_per_step'] / step:.2f}",
                     _min_med_max(peaks, "{:.0f}"),
                     f"{statistics.median(r['after_build_mib'] for r in runs[name]):.0f}",
                     f"{step / base[0]:.3f}", f"{peak / base[1]:.3f}"])
    kind = runs[names[0]][0]["kind"]
    return tabulate(rows, headers=["config", "s/step min/med/max", "images/s",
                                   f"{kind} MiB min/med/max", "after build MiB",
                                   "time ratio", "memory ratio"], tablefmt="github")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", action="append", nargs="+", required=True,
                        metavar="FILE [KEY VALUE ...]")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2, help="source and target images each")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iteration", type=int, default=-1,
                        help="first iteration number (-1: SOLVER.MAX_ITER // 2)")
    parser.add_argument("--workers", type=int, default=-1, help="-1: 0 on the CPU, 4 on CUDA")
    parser.add_argument("--real-data", action="store_true",
                        help="the configs' own datasets and weight files")
    parser.add_argument("--output-dir", default="output/benchmark_train")
    parser.add_argument("--processes", type=int, nargs="+", default=[1],
                        help="numbers of training processes to run each config with")
    parser.add_argument("--processes-run", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE overrides for every config (last on the line)")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker_out:
        from detectron2.engine import launch

        (config_file, *opts), = args.config_file
        launch(worker_process, args.processes_run, dist_url="auto",
               args=(config_file, opts, args))
        return 0
    os.makedirs(args.output_dir, exist_ok=True)
    entries = [(entry, p) for entry in args.config_file for p in args.processes]
    names = [" ".join(entry) + (f" [{p} proc]" if len(args.processes) > 1 else "")
             for entry, p in entries]
    runs: Dict[str, List[Dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for i, ((config_file, *opts), processes) in enumerate(entries):
            out = os.path.join(args.output_dir, f"round{r}_config{i}.json")
            args.processes_run = processes
            result = run_child(config_file, opts, args, out)
            runs[names[i]].append(result)
            print(f"[benchmark_train] round {r} {names[i]}: "
                  f"{statistics.median(result['times']):.3f} s/step, "
                  f"{result['peak_mib']:.0f} MiB", flush=True)
    report = summarise(names, runs)
    print(report)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(f"crop {args.crop}, batch {args.batch}+{args.batch}, {args.steps} steps x "
                f"{args.rounds} rounds after {args.warmup} warm-up\n\n{report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
