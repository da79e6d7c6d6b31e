"""Training runs on disk, for the tools that reuse them (``make demo``, benchmark_uda):
their metrics, and whether a finished run was trained with the config asked for now."""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["read_metrics", "trained_with", "finished_run", "reset_run_dir"]


def read_metrics(output_dir: str) -> Tuple[Dict, List[float]]:
    """The merged scalars of ``metrics.json`` (later rows win) and every iteration's ``time``;
    empty when there is no file."""
    path = os.path.join(output_dir, "metrics.json")
    merged, times = {}, []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                merged.update(row)
                if "time" in row:
                    times.append(row["time"])
    return merged, times


def trained_with(output_dir: str, config_file: str, opts: Sequence[str]) -> bool:
    """Whether ``output_dir/config.yaml`` is the config that
    ``train_net.py --config-file config_file OUTPUT_DIR output_dir *opts`` would train now.

    Only training writes ``config.yaml`` (``train_net.py --eval-only`` into a run's folder logs
    its config but never saves it there), so the file is what the run was trained with."""
    import yaml

    from ..config import load_config

    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return False
    wanted = load_config(config_file, ["OUTPUT_DIR", output_dir, *opts])
    with open(path) as f:
        return yaml.safe_load(f) == yaml.safe_load(wanted.dump())


def finished_run(output_dir: str, config_file: str, opts: Sequence[str]
                 ) -> Optional[Tuple[Dict, List[float]]]:
    """``read_metrics`` of a run that reached its final evaluation with this very config;
    None when it must be (re)trained."""
    merged, times = read_metrics(output_dir)
    if "sem_seg/mIoU" not in merged or not trained_with(output_dir, config_file, opts):
        return None
    return merged, times


def reset_run_dir(output_dir: str) -> None:
    """An empty ``output_dir`` for a run trained from scratch: Detectron2 appends to an old
    ``metrics.json``, which would mix two runs' figures."""
    shutil.rmtree(output_dir, ignore_errors=True)
    os.makedirs(output_dir)
