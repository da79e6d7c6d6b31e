#!/usr/bin/env python3
"""Write Cityscapes train-id labels and the rare-class statistics of its train split.

    python datasets/prepare_cityscapes.py [--root DIR] [--nproc N]

Expects ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` extracted into
``<root>/cityscapes`` (``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png``,
``gtFine/{train,val}/<city>/*_gtFine_{labelIds.png,polygons.json}``) and writes, next to them:

    gtFine/{train,val}/<city>/<city>_xxxxxx_yyyyyy_gtFine_labelTrainIds.png
    rcs_stats.json     pixels per train id of every train label (rare-class sampling source)

Train ids come from cityscapesscripts' label table: ``*_gtFine_labelIds.png`` through an
id -> train id lookup table, or, when only the polygons exist, cityscapesscripts'
``json2labelImg(..., "trainIds")``. Resumable: existing labels are skipped, every file is
written atomically.
"""
from __future__ import annotations

import io
import os
import sys
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS  # noqa: E402
from cityscapesscripts.preparation.json2labelImg import json2labelImg  # noqa: E402

from duda_d2.data.datasets.paths import dataset_root  # noqa: E402
from duda_d2.data.datasets.real_datasets import CITYSCAPES, incomplete_dataset_error  # noqa: E402
from duda_d2.data.datasets.register_cityscapes import (  # noqa: E402
    CityscapesImage, list_cityscapes_split)
from duda_d2.data.preparation import (  # noqa: E402
    RcsStatsError, class_pixel_counts, id_to_train_id_lut, load_rcs_stats, parallel_map,
    prepare_arguments, save_rcs_stats, write_atomic, write_png)

SPLITS = ("train", "val")
NUM_CLASSES = 19
# Train ids outside 0..18 (255: ignored classes, -1: license plate) all become 255.
ID_TO_TRAIN_ID = id_to_train_id_lut({l.id: l.trainId for l in CITYSCAPES_LABELS
                                     if l.id >= 0 and 0 <= l.trainId < NUM_CLASSES})


class Conversion(NamedTuple):
    source: str  # *_gtFine_labelIds.png or *_gtFine_polygons.json
    output: str  # *_gtFine_labelTrainIds.png


def _label_source(item: CityscapesImage) -> Optional[str]:
    """The file to convert: the label-id PNG if present, else the polygons, else None."""
    for suffix in ("labelIds.png", "polygons.json"):
        if os.path.isfile(item.gt_prefix + suffix):
            return item.gt_prefix + suffix
    return None


def pending_conversions(root: str, split: str) -> Tuple[List[Conversion], List[str]]:
    """(labels still to write, all train-id label paths) of ``split``.

    An image whose label is missing and that has neither label source is an error naming it.
    """
    items = list_cityscapes_split(root, split)
    todo, orphans = [], []
    for item in items:
        if os.path.isfile(item.train_id_label):
            continue
        source = _label_source(item)
        if source is None:
            orphans.append(item.image)
        else:
            todo.append(Conversion(source, item.train_id_label))
    if orphans:
        raise incomplete_dataset_error(
            CITYSCAPES, root, f"{len(orphans)} Cityscapes {split} images have neither "
            f"*_gtFine_labelIds.png nor *_gtFine_polygons.json (first: "
            f"'{os.path.abspath(orphans[0])}'; {CITYSCAPES.archives[1]} half-extracted?)")
    return todo, [item.train_id_label for item in items]


def _from_label_ids(path: str) -> np.ndarray:
    label_ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label_ids is None or label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        raise ValueError(f"'{path}' is not a single-channel 8-bit label-id PNG")
    return ID_TO_TRAIN_ID[label_ids]


def _png_from_polygons(path: str) -> bytes:
    """The train-id PNG that cityscapesscripts draws from ``path``'s polygons."""
    buffer = io.BytesIO()
    buffer.name = "labelTrainIds.png"  # PIL picks the format from the name
    try:
        json2labelImg(path, buffer, "trainIds")
    except SystemExit:  # cityscapesscripts exits on an unknown label name
        raise ValueError(f"cityscapesscripts could not convert '{path}' (unknown label?)"
                         ) from None
    return buffer.getvalue()


def convert(job: Conversion) -> Tuple[str, Dict[str, int]]:
    """Write one train-id label atomically; returns its path and its class pixel counts."""
    if job.source.endswith(".json"):
        data = _png_from_polygons(job.source)
        label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        write_atomic(job.output, data)
    else:
        label = _from_label_ids(job.source)
        write_png(job.output, label)
    return job.output, class_pixel_counts(label, NUM_CLASSES)


def count_pixels(path: str) -> Tuple[str, Dict[str, int]]:
    """Class pixel counts of an existing train-id label."""
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"cannot read '{path}'")
    return path, class_pixel_counts(label, NUM_CLASSES)


def _stats_complete(cityscapes_dir: str, keys: List[str]) -> bool:
    try:
        return set(load_rcs_stats(cityscapes_dir)) == set(keys)
    except (RcsStatsError, ValueError, KeyError):
        return False


def write_rcs_stats(cityscapes_dir: str, labels: List[str], counted: Dict[str, Dict[str, int]],
                    nproc: int, progress: bool) -> str:
    """Write ``rcs_stats.json`` for the train ``labels``, counting those not in ``counted``."""
    rest = [path for path in labels if path not in counted]
    counts = dict(counted)
    counts.update(parallel_map(count_pixels, rest, nproc, "cityscapes train stats", progress))
    return save_rcs_stats(cityscapes_dir, {os.path.relpath(path, cityscapes_dir): c
                                           for path, c in counts.items()}, NUM_CLASSES)


def prepare_cityscapes(root: Optional[str] = None, nproc: Optional[int] = None,
                       progress: bool = True) -> Dict[str, int]:
    """Convert the missing train-id labels under ``<root>/cityscapes`` and (re)write the train
    split's RCS statistics when they changed; returns counts of converted/skipped labels."""
    root = dataset_root() if root is None else root
    nproc = nproc or os.cpu_count() or 1
    jobs = {split: pending_conversions(root, split) for split in SPLITS}  # check all first
    cityscapes_dir = os.path.join(root, CITYSCAPES.folder)
    stats = {"converted": 0, "skipped": 0, "rcs_stats_written": 0}
    counted: Dict[str, Dict[str, int]] = {}
    for split, (todo, labels) in jobs.items():
        done = parallel_map(convert, todo, nproc, f"cityscapes {split} labels", progress)
        if split == "train":
            counted = dict(done)
        stats["converted"] += len(todo)
        stats["skipped"] += len(labels) - len(todo)
    train_labels = jobs["train"][1]
    keys = [os.path.relpath(path, cityscapes_dir) for path in train_labels]
    if counted or not _stats_complete(cityscapes_dir, keys):
        write_rcs_stats(cityscapes_dir, train_labels, counted, nproc, progress)
        stats["rcs_stats_written"] = 1
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = prepare_arguments(__doc__.split("\n\n")[0], argv)
    try:
        stats = prepare_cityscapes(args.root, args.nproc)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cityscapes: {stats['converted']} labels converted, {stats['skipped']} already there"
          f"{', rcs_stats.json written' if stats['rcs_stats_written'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
