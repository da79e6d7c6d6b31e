#!/usr/bin/env python
"""Train several configs with several seeds on the same budget and compare target mIoU.

    python tools/benchmark_uda.py \
        --config-file configs/synthetic/source_only.yaml \
        --config-file configs/synthetic/self_training.yaml \
        [--seeds 0 1 2] [--output-dir output/benchmark_uda] [KEY VALUE ...]

Each (config, seed) is one ``tools/train_net.py`` run in ``OUTPUT_DIR/<config>/seed<s>``; a run
whose ``metrics.json`` already holds the final mIoU and whose ``config.yaml`` is the config
asked for now is not trained again, so an interrupted benchmark resumes. For a DUDA or self-training config the final checkpoint is also evaluated
with its EMA teacher (``MODEL.DUDA.INFERENCE_NETWORK`` / ``MODEL.UDA.INFERENCE_NETWORK
teacher``, an extra row): DUDA's small student is meant to come close to its large teacher,
and above the small pair's own teacher. Prints mIoU mean ± std (and per seed), seconds per iteration,
per-class IoU -- for panoptic configs PQ / PQ_th / PQ_st / SQ / RQ, the semantic branch's mIoU
and per-class PQ -- and saves a bar plot next to the results.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tabulate import tabulate  # noqa: E402

from duda_d2.utils.benchmark import config_label  # noqa: E402
from duda_d2.utils.runs import finished_run, reset_run_dir  # noqa: E402


def run_one(config_file: str, seed: int, output_dir: str, opts: List[str]) -> Dict:
    """Final evaluation scalars and the median seconds per iteration of one run, trained
    unless a finished run with this very config is already in ``output_dir``."""
    run_opts = ["SEED", str(seed), *opts]
    done = finished_run(output_dir, config_file, run_opts)
    if done is None:
        print(f"[benchmark_uda] {config_label(config_file)} seed {seed} -> {output_dir}",
              flush=True)
        reset_run_dir(output_dir)
        cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
               config_file, "OUTPUT_DIR", output_dir, *run_opts]
        with open(os.path.join(output_dir, "stdout.log"), "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
        done = finished_run(output_dir, config_file, run_opts)
    merged, times = done
    return {**merged, "seconds_per_iter": statistics.median(times) if times else float("nan")}


# Meta-architecture -> (config key that picks the evaluated network, row label).
TEACHER_EVALUATION = {"DUDA": ("MODEL.DUDA.INFERENCE_NETWORK", "large EMA teacher"),
                      "SelfTrainingUDA": ("MODEL.UDA.INFERENCE_NETWORK", "EMA teacher")}


def teacher_evaluation(output_dir: str):
    """``(key, label)`` to evaluate a finished run's teacher, or None (no teacher)."""
    import yaml

    with open(os.path.join(output_dir, "config.yaml")) as f:
        meta_arch = yaml.safe_load(f)["MODEL"]["META_ARCHITECTURE"]
    return TEACHER_EVALUATION.get(meta_arch)


def evaluate_teacher(config_file: str, run_dir: str, trained: Dict, opts: List[str],
                     key: str = "MODEL.DUDA.INFERENCE_NETWORK") -> Dict:
    """The EMA teacher's evaluation of a finished run (cached like training)."""
    out = os.path.join(run_dir, "eval_teacher")
    found = glob.glob(os.path.join(out, "inference", "*", "sem_seg_evaluation.json"))
    panoptic = glob.glob(os.path.join(out, "inference", "*", "panoptic_evaluation.json"))
    if not found or ("panoptic_seg/PQ" in trained and not panoptic):
        cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--eval-only",
               "--config-file", config_file, *opts, "OUTPUT_DIR", out,
               "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth"),
               key, "teacher"]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "stdout.log"), "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
        found = glob.glob(os.path.join(out, "inference", "*", "sem_seg_evaluation.json"))
        panoptic = glob.glob(os.path.join(out, "inference", "*", "panoptic_evaluation.json"))
    with open(found[0]) as f:
        metrics = {f"sem_seg/{k}": v for k, v in json.load(f).items()}
    if panoptic:
        with open(panoptic[0]) as f:
            metrics.update({f"panoptic_seg/{k}": v for k, v in json.load(f).items()})
    return {**metrics, "seconds_per_iter": trained["seconds_per_iter"]}


def _mean_std(values: List[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


PANOPTIC_COLUMNS = ("PQ", "PQ_th", "PQ_st", "SQ", "RQ")


def summarise_panoptic(results: Dict[str, List[Dict]]) -> str:
    """PQ (all / things / stuff), SQ, RQ and the semantic branch's mIoU, mean ± std over
    seeds, then per-class PQ."""
    rows = []
    for name, runs in results.items():
        rows.append([name] + [_mean_std([r[f"panoptic_seg/{c}"] for r in runs])
                              for c in PANOPTIC_COLUMNS]
                    + [" ".join(f"{r['panoptic_seg/PQ']:.1f}" for r in runs),
                       _mean_std([r["sem_seg/mIoU"] for r in runs]),
                       f"{statistics.median(r['seconds_per_iter'] for r in runs):.3f}"])
    table = tabulate(rows, headers=["config", *PANOPTIC_COLUMNS, "PQ per seed", "mIoU",
                                    "s/iter"], tablefmt="github", disable_numparse=True)
    prefix = "panoptic_seg/PQ-"
    classes = [c for c in dict.fromkeys(k[len(prefix):] for runs in results.values()
                                         for r in runs for k in r if k.startswith(prefix))
               if all(r.get(prefix + c) == r.get(prefix + c)
                      for runs in results.values() for r in runs)]  # NaN: class never seen
    per_class = [[name] + [f"{statistics.mean(r[prefix + c] for r in runs):.1f}"
                           for c in classes] for name, runs in results.items()]
    return table + "\n\nper-class PQ (mean over seeds)\n" + tabulate(
        per_class, headers=["config"] + classes, tablefmt="github", disable_numparse=True)


def summarise(results: Dict[str, List[Dict]]) -> str:
    if all("panoptic_seg/PQ" in r for runs in results.values() for r in runs):
        return summarise_panoptic(results)
    rows = []
    for name, runs in results.items():
        mious = [r["sem_seg/mIoU"] for r in runs]
        rows.append([name, _mean_std(mious), " ".join(f"{m:.1f}" for m in mious),
                     f"{statistics.median(r['seconds_per_iter'] for r in runs):.3f}"])
    table = tabulate(rows, headers=["config", "mIoU mean ± std", "per seed", "s/iter"],
                     tablefmt="github", disable_numparse=True)
    classes = sorted({k[len("sem_seg/IoU-"):] for runs in results.values() for r in runs
                      for k, v in r.items() if k.startswith("sem_seg/IoU-") and v == v})
    per_class = [[name] + [f"{statistics.mean(r[f'sem_seg/IoU-{c}'] for r in runs):.1f}"
                           for c in classes] for name, runs in results.items()]
    return table + "\n\nper-class IoU (mean over seeds)\n" + tabulate(
        per_class, headers=["config"] + classes, tablefmt="github", disable_numparse=True)


def plot(results: Dict[str, List[Dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    panoptic = all("panoptic_seg/PQ" in r for runs in results.values() for r in runs)
    key, label = ("panoptic_seg/PQ", "target PQ (%)") if panoptic else ("sem_seg/mIoU",
                                                                        "target mIoU (%)")
    means = [statistics.mean(r[key] for r in results[n]) for n in names]
    stds = [statistics.stdev(r[key] for r in results[n]) if len(results[n]) > 1
            else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(1.8 * len(names) + 2, 4))
    ax.bar(range(len(names)), means, yerr=stds, capsize=6, color="#4477aa")
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right")
    ax.set_ylabel(label)
    ax.set_title("UDA benchmark (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, action="append")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", default="output/benchmark_uda")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for all")
    args = parser.parse_args(argv)
    results: Dict[str, List[Dict]] = {}
    for config_file in args.config_file:
        name = config_label(config_file)
        run_dirs = [os.path.join(args.output_dir, name, f"seed{seed}") for seed in args.seeds]
        results[name] = [run_one(config_file, seed, run_dir, args.opts)
                         for seed, run_dir in zip(args.seeds, run_dirs)]
        teacher = teacher_evaluation(run_dirs[0])
        if teacher is not None:
            key, label = teacher
            results[f"{name} ({label})"] = [
                evaluate_teacher(config_file, run_dir, trained, args.opts, key)
                for run_dir, trained in zip(run_dirs, results[name])]
    report = summarise(results)
    print(report)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(report + "\n")
    plot_path = os.path.join(args.output_dir, "results.png")
    plot(results, plot_path)
    print(f"plot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
