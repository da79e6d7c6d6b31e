"""Shared machinery of the ``datasets/prepare_*.py`` scripts.

Every script converts many files independently, so they share: atomic writes (an interrupted
run never leaves a truncated file, and a re-run skips what is done), a process pool with a tqdm
progress bar, id -> train-id lookup tables, and the rare-class-sampling (RCS) statistics file.
Pure numpy / OpenCV / tqdm: no torch or Detectron2 here.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, TypeVar

import cv2
import numpy as np
from tqdm import tqdm

__all__ = ["write_atomic", "write_png", "parallel_map", "id_to_train_id_lut",
           "class_pixel_counts", "RCS_STATS_FILE", "save_rcs_stats", "load_rcs_stats",
           "RcsStatsError", "iter_files", "prepare_arguments"]

T = TypeVar("T")
R = TypeVar("R")

RCS_STATS_FILE = "rcs_stats.json"
RCS_STATS_VERSION = 1


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file next to ``path``, then rename it into place."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_png(path: str, array: np.ndarray) -> None:
    """Atomically write a uint8 (H, W) label or (H, W, 3) RGB image as PNG."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    write_atomic(path, buf.tobytes())


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def parallel_map(fn: Callable[[T], R], items: Sequence[T], nproc: int, desc: str,
                 progress: bool = True) -> List[R]:
    """``[fn(x) for x in items]`` over ``nproc`` processes, with a progress bar (unordered).

    Workers are forked: call it from a process that has not run torch operations yet (as the
    prepare scripts do); forking after torch started its thread pools can hang the workers.
    """
    nproc = max(1, min(nproc, len(items)))
    bar = (lambda it: tqdm(it, total=len(items), desc=desc, unit="file")) if progress \
        else (lambda it: it)
    if nproc == 1:
        return list(bar(map(fn, items)))
    with multiprocessing.Pool(nproc, initializer=_init_worker) as pool:
        return list(bar(pool.imap_unordered(fn, items, chunksize=4)))


def id_to_train_id_lut(mapping: Mapping[int, int], ignore_label: int = 255,
                       size: int = 256) -> np.ndarray:
    """A lookup table sending each raw id to its train id, every other id to ``ignore_label``."""
    lut = np.full(size, ignore_label, dtype=np.uint8)
    for raw, train in mapping.items():
        lut[raw] = train
    return lut


def class_pixel_counts(label: np.ndarray, num_classes: int = 19) -> Dict[str, int]:
    """Pixels of each train id present in ``label`` ({"class id": count}, ignore excluded)."""
    counts = np.bincount(label[label < num_classes].ravel(), minlength=num_classes)
    return {str(c): int(n) for c, n in enumerate(counts) if n > 0}


class RcsStatsError(FileNotFoundError):
    """The rare-class-sampling statistics are missing or do not match the dataset."""


def save_rcs_stats(dataset_dir: str, pixels_per_image: Mapping[str, Mapping[str, int]],
                   num_classes: int = 19) -> str:
    """Write ``{label file relative to dataset_dir: {class: pixels}}`` as the RCS statistics."""
    path = os.path.join(dataset_dir, RCS_STATS_FILE)
    payload = {"version": RCS_STATS_VERSION, "num_classes": num_classes,
               "images": {k: dict(v) for k, v in sorted(pixels_per_image.items())}}
    write_atomic(path, json.dumps(payload).encode())
    return path


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


def iter_files(folder: str, suffix: str) -> Iterable[str]:
    """Paths (relative to ``folder``) of the files below it ending with ``suffix``, sorted."""
    found = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name.endswith(suffix):
                found.append(os.path.relpath(os.path.join(dirpath, name), folder))
    return sorted(found)


def prepare_arguments(description: str, argv: Optional[Sequence[str]] = None):
    """The shared command line of the prepare scripts: ``--root`` and ``--nproc``."""
    import argparse

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="dataset root; default: $DETECTRON2_DATASETS, else ./datasets")
    parser.add_argument("--nproc", type=int, default=os.cpu_count() or 1,
                        help="worker processes")
    return parser.parse_args(argv)
