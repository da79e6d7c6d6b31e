#!/usr/bin/env python
"""Label-free checkpoint signals of finished runs, next to their target mIoU, and how well
each signal tracks it (issue 19).

    python tools/label_free_signals.py output/benchmark_v2/scratch/table/*/*/seed* \\
        [--images 100] [--source-val synthetic_uda_source_val] [--output signals.md]
    python tools/label_free_signals.py --periodic RUN_DIR [...]   # over evaluation periods

For every run folder (``config.yaml``, ``model_final.pth``, ``metrics.json``): the signals of
``duda_d2.engine.label_free`` computed on its final checkpoint -- none reads a target label --
and the target mIoU the run logged. Then, per signal, the Pearson and Spearman correlation with
target mIoU over the runs that have it. A signal that tracks target mIoU can choose among
checkpoints (or runs) when the target has no labels.

``--periodic`` reads instead what a run trained with ``TEST.LABEL_FREE_IMAGES`` and
``TEST.EVAL_PERIOD`` logged: every evaluation period's ``label_free/*`` next to its target mIoU,
correlated within each run (does the signal track the run's own progress?).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np
from tabulate import tabulate
from tqdm import tqdm

from detectron2.modeling import build_model

from duda_d2 import load_config
from duda_d2.engine import AtomicCheckpointer
from duda_d2.engine.label_free import label_free_signals

TARGET = "target mIoU"


def final_target_miou(run_dir: str) -> float:
    """The last ``sem_seg/mIoU`` the run logged (its final evaluation on the target val)."""
    value = None
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            value = json.loads(line).get("sem_seg/mIoU", value)
    if value is None:
        raise ValueError(f"{run_dir}/metrics.json holds no sem_seg/mIoU: is the run finished?")
    return float(value)


def run_signals(run_dir: str, images: int, source_val: List[str]) -> Dict[str, float]:
    cfg = load_config(os.path.join(run_dir, "config.yaml"), [
        "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth"),
        "DATASETS.SOURCE_VAL", tuple(source_val), "DATALOADER.NUM_WORKERS", 0])
    model = build_model(cfg)
    AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    signals = label_free_signals(cfg, model, images)
    signals = {k.split("/")[0] if k.startswith("source_val_mIoU/") else k: v
               for k, v in signals.items()}
    return {TARGET: final_target_miou(run_dir), **signals}


def periodic_rows(run_dir: str) -> List[Dict[str, float]]:
    """The ``metrics.json`` lines of ``run_dir`` holding both label-free signals and mIoU."""
    rows = []
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            values = json.loads(line)
            signals = {k[len("label_free/"):].split("/")[0]: v for k, v in values.items()
                       if k.startswith("label_free/")}
            if signals and "sem_seg/mIoU" in values:
                rows.append({TARGET: values["sem_seg/mIoU"], **signals,
                             "iteration": values["iteration"]})
    if not rows:
        raise ValueError(f"{run_dir}/metrics.json has no period with both label_free/* and "
                         f"sem_seg/mIoU: train with TEST.LABEL_FREE_IMAGES and TEST.EVAL_PERIOD")
    return rows


def _ranks(values: np.ndarray) -> np.ndarray:
    return values.argsort().argsort().astype(float)


def correlations(rows: List[Dict[str, float]]) -> List[List]:
    """(signal, runs, Pearson, Spearman) of every signal against target mIoU."""
    signals = [k for k in dict.fromkeys(k for r in rows for k in r)
               if k not in (TARGET, "iteration")]
    table = []
    for name in signals:
        pairs = np.array([(r[name], r[TARGET]) for r in rows if name in r])
        if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0:
            table.append([name, len(pairs), "-", "-"])
            continue
        pearson = np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]
        spearman = np.corrcoef(_ranks(pairs[:, 0]), _ranks(pairs[:, 1]))[0, 1]
        table.append([name, len(pairs), f"{pearson:+.2f}", f"{spearman:+.2f}"])
    return table


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished tools/train_net.py output folders")
    parser.add_argument("--images", type=int, default=100,
                        help="target training images the signals are computed on")
    parser.add_argument("--source-val", nargs="*", default=["synthetic_uda_source_val"],
                        help="labelled source split(s) no run trained on ('' for none)")
    parser.add_argument("--output", default=None, help="also write the tables here (markdown)")
    parser.add_argument("--group", action="append", default=[], metavar="TEXT",
                        help="also correlate within the runs whose path contains TEXT "
                             "(repeatable; e.g. one group per regime)")
    parser.add_argument("--periodic", action="store_true",
                        help="correlate what each run logged over its evaluation periods")
    args = parser.parse_args(argv)
    if args.periodic:
        return _periodic(args)
    source_val = [s for s in args.source_val if s]
    rows, names = [], []
    for run_dir in tqdm(args.runs, desc="runs"):
        rows.append(run_signals(run_dir, args.images, source_val))
        names.append(os.path.relpath(run_dir))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    per_run = tabulate([[n] + [f"{r[c]:.3f}" if c in r else "-" for c in columns]
                        for n, r in zip(names, rows)], headers=["run"] + columns,
                       tablefmt="github", disable_numparse=True)
    groups = [("all runs", rows)] + [
        (f"runs with '{g}' in their path", [r for n, r in zip(names, rows) if g in n])
        for g in args.group]
    report = per_run
    for title, members in groups:
        summary = tabulate(correlations(members), headers=["signal", "runs", "Pearson r",
                                                           "Spearman rho"],
                           tablefmt="github", disable_numparse=True)
        report += f"\n\ncorrelation with {TARGET}, {title}\n{summary}"
    report += "\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)
    return 0


def _periodic(args) -> int:
    parts = []
    for run_dir in args.runs:
        rows = periodic_rows(run_dir)
        summary = tabulate(correlations(rows), headers=["signal", "periods", "Pearson r",
                                                        "Spearman rho"],
                           tablefmt="github", disable_numparse=True)
        parts.append(f"{os.path.relpath(run_dir)} ({len(rows)} evaluations, metrics.json "
                     f"iterations {', '.join(str(int(r['iteration'])) for r in rows)})\n"
                     f"{summary}")
    report = "\n\n".join(parts) + "\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
