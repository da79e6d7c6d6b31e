"""The rare-class-sampling (RCS) statistics file a prepare script writes next to a dataset, and
its reading at training time.

``<dataset folder>/rcs_stats.json`` holds, for every label file (path relative to the dataset
folder), the pixels of each train id in it. ``duda_d2.prep.rcs_stats_computation`` computes and
writes it; the rare-class sampler reads it here, without re-reading any label.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

__all__ = ["RCS_STATS_FILE", "RCS_STATS_VERSION", "RcsStatsError", "load_rcs_stats"]

RCS_STATS_FILE = "rcs_stats.json"
RCS_STATS_VERSION = 1


class RcsStatsError(FileNotFoundError):
    """The rare-class-sampling statistics are missing or do not match the dataset."""


def load_rcs_stats(dataset_dir: str, prepare_script: Optional[str] = None
                   ) -> Dict[str, Dict[int, int]]:
    """Read the RCS statistics of ``dataset_dir``: {label path relative to it: {class: pixels}}."""
    path = os.path.join(dataset_dir, RCS_STATS_FILE)
    if not os.path.isfile(path):
        fix = (f"run `.venv/bin/python {prepare_script}` to compute them" if prepare_script
               else "run the dataset's prepare script to compute them")
        raise RcsStatsError(f"rare-class-sampling statistics '{path}' not found; {fix}, or set "
                            f"DATALOADER.RCS.ENABLED False (uniform sampling).")
    with open(path) as f:
        payload = json.load(f)
    if payload.get("version") != RCS_STATS_VERSION:
        raise RcsStatsError(f"'{path}' has version {payload.get('version')}, expected "
                            f"{RCS_STATS_VERSION}; re-run the dataset's prepare script")
    return {name: {int(c): int(n) for c, n in counts.items()}
            for name, counts in payload["images"].items()}
