#!/usr/bin/env python3
"""Write Cityscapes train-id labels and the rare-class statistics of its train split; with
``--panoptic`` also its panoptic ground truth (cityscapesscripts' createPanopticImgs).

    python datasets/prepare_cityscapes.py [--root DIR] [--nproc N] [--panoptic]

Expects ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` extracted into
``<root>/cityscapes`` (``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png``,
``gtFine/{train,val}/<city>/*_gtFine_{labelIds.png,polygons.json}``) and writes, next to them:

    gtFine/{train,val}/<city>/<city>_xxxxxx_yyyyyy_gtFine_labelTrainIds.png
    rcs_stats.json     pixels per train id of every train label (rare-class sampling source)

Train ids come from cityscapesscripts' label table: ``*_gtFine_labelIds.png`` through an
id -> train id lookup table, or, when only the polygons exist, cityscapesscripts'
``json2labelImg(..., "trainIds")``. Resumable: existing labels are skipped (those that are empty
or damaged are converted again), every file is written atomically. Images and ``labelIds.png``
files that are empty or damaged, and ``gtFine`` files without their image, are an error listing
them, before anything is converted.

``--panoptic`` then runs cityscapesscripts' ``createPanopticImgs`` (``convert2panoptic``, label
ids as category ids) on the train and val splits, which reads ``*_gtFine_instanceIds.png`` and
writes what Detectron2's ``cityscapes_fine_panoptic_{train,val}`` read::

    gtFine/cityscapes_panoptic_{train,val}/<city>_xxxxxx_yyyyyy_gtFine_panoptic.png
    gtFine/cityscapes_panoptic_{train,val}.json

A split whose JSON exists, parses and lists only whole PNGs is skipped (createPanopticImgs
writes the JSON last, so an interrupted run leaves none, or a damaged one, and is redone).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS  # noqa: E402
from cityscapesscripts.preparation.json2labelImg import json2labelImg  # noqa: E402

from duda_d2.data.datasets.file_check import file_problem  # noqa: E402
from duda_d2.data.datasets.layout import (  # noqa: E402
    Pair, dataset_error, dataset_root, list_split, require_images, require_whole_files)
from duda_d2.data.datasets.panoptic_datasets import panoptic_split  # noqa: E402
from duda_d2.data.datasets.project_datasets import CITYSCAPES  # noqa: E402
from duda_d2.data.rcs_stats_file import RcsStatsError, load_rcs_stats  # noqa: E402
from duda_d2.prep.command_line import (  # noqa: E402
    prepare_argument_parser, replaced_note, run_prepare_cli)
from duda_d2.prep.label_conversion import id_to_train_id_lut  # noqa: E402
from duda_d2.prep.png_files import write_png  # noqa: E402
from duda_d2.prep.process_pool import parallel_map  # noqa: E402
from duda_d2.prep.rcs_stats_computation import class_pixel_counts, save_rcs_stats  # noqa: E402
from duda_d2.utils.atomic_files import atomic_write_bytes  # noqa: E402

SPLITS = {"train": "cityscapes_fine_sem_seg_train", "val": "cityscapes_fine_sem_seg_val"}
NUM_CLASSES = 19
TRAIN_ID_SUFFIX = "labelTrainIds.png"
LABEL_SOURCES = ("labelIds.png", "polygons.json")  # in order of preference
# Train ids outside 0..18 (255: ignored classes, -1: license plate) all become 255.
ID_TO_TRAIN_ID = id_to_train_id_lut({l.id: l.trainId for l in CITYSCAPES_LABELS
                                     if l.id >= 0 and 0 <= l.trainId < NUM_CLASSES})


class Conversion(NamedTuple):
    source: str  # *_gtFine_labelIds.png or *_gtFine_polygons.json
    output: str  # *_gtFine_labelTrainIds.png
    replaces_damaged: bool = False  # the output exists but is empty or damaged


def _label_source(train_id_label: str) -> Optional[str]:
    """The file to convert: the label-id PNG if present, else the polygons, else None."""
    gt_prefix = train_id_label[:-len(TRAIN_ID_SUFFIX)]
    for suffix in LABEL_SOURCES:
        if os.path.isfile(gt_prefix + suffix):
            return gt_prefix + suffix
    return None


def _check_downloaded_files(root: str, split: str, pairs: List[Pair]) -> List[Tuple[str, str]]:
    """Check that every ``gtFine`` file of ``split`` has its image and that no image or label-id
    PNG is empty or damaged; returns ``pairs`` as absolute paths."""
    require_images(CITYSCAPES, CITYSCAPES.split(SPLITS[split]), root, pairs,
                   [CITYSCAPES.label_suffix] + [f"_gtFine_{suffix}" for suffix in LABEL_SOURCES])
    cityscapes_dir = os.path.abspath(CITYSCAPES.dataset_dir(root))
    pairs = [(os.path.join(cityscapes_dir, image), os.path.join(cityscapes_dir, label))
             for image, label in pairs]
    label_ids = [label[:-len(TRAIN_ID_SUFFIX)] + LABEL_SOURCES[0] for _, label in pairs]
    require_whole_files(CITYSCAPES, root, f"images and label-id PNGs of Cityscapes {split}",
                        [image for image, _ in pairs] + [p for p in label_ids if os.path.exists(p)])
    return pairs


def pending_conversions(root: str, split: str) -> Tuple[List[Conversion], List[str]]:
    """(labels still to write, all train-id label paths) of ``split``.

    An image whose label is missing and that has neither label source is an error naming it,
    and so are ``_check_downloaded_files``' problems. A label that exists but is empty or
    damaged is written again.
    """
    pairs = _check_downloaded_files(
        root, split, list_split(CITYSCAPES, CITYSCAPES.split(SPLITS[split]), root))
    todo, orphans = [], []
    for image, label in pairs:
        problem = file_problem(label)
        if problem is None:
            continue
        source = _label_source(label)
        if source is None:
            orphans.append(image)
        else:
            todo.append(Conversion(source, label, problem != "does not exist"))
    if orphans:
        raise dataset_error(
            CITYSCAPES, root, f"{len(orphans)} Cityscapes {split} images have neither "
            f"*_gtFine_labelIds.png nor *_gtFine_polygons.json (first: "
            f"'{os.path.abspath(orphans[0])}'; {CITYSCAPES.archives[1]} half-extracted?)")
    return todo, [label for _, label in pairs]


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
        atomic_write_bytes(job.output, data)
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


INSTANCE_SUFFIX = "instanceIds.png"  # <city>_xxxxxx_yyyyyy_gtFine_instanceIds.png


def _panoptic_complete(json_path: str, png_dir: str) -> bool:
    """Whether ``json_path`` parses and every PNG it lists in ``png_dir`` is whole."""
    try:
        with open(json_path) as f:
            annotations = json.load(f)["annotations"]
        return bool(annotations) and all(
            file_problem(os.path.join(png_dir, a["file_name"])) is None for a in annotations)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _require_instance_ids(root: str, split: str) -> None:
    """Every image of ``split`` has a whole ``*_gtFine_instanceIds.png`` (createPanopticImgs'
    input, part of gtFine_trainvaltest.zip); an error listing those that do not."""
    pairs = list_split(CITYSCAPES, CITYSCAPES.split(SPLITS[split]), root)
    cityscapes_dir = os.path.abspath(CITYSCAPES.dataset_dir(root))
    paths = [os.path.join(cityscapes_dir, label[:-len(TRAIN_ID_SUFFIX)] + INSTANCE_SUFFIX)
             for _, label in pairs]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = missing[:5] + ([f"... and {len(missing) - 5} more"] if len(missing) > 5 else [])
        raise dataset_error(
            CITYSCAPES, root, f"{len(missing)} of {len(paths)} Cityscapes {split} images have no "
            f"*_gtFine_{INSTANCE_SUFFIX}, which the panoptic ground truth is made from "
            f"({CITYSCAPES.archives[1]} half-extracted?)", details=shown)
    require_whole_files(CITYSCAPES, root, f"instance-id PNGs of Cityscapes {split}", paths)


def prepare_cityscapes_panoptic(root: Optional[str] = None, progress: bool = True) -> List[str]:
    """Run createPanopticImgs on every split whose panoptic files are missing or incomplete;
    returns the splits converted."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = dataset_root() if root is None else root
    converted = []
    for split in SPLITS:
        pan = panoptic_split(f"cityscapes_fine_panoptic_{split}")
        json_path = os.path.join(CITYSCAPES.dataset_dir(root), pan.panoptic_json)
        png_dir = os.path.join(CITYSCAPES.dataset_dir(root), pan.panoptic_root)
        if _panoptic_complete(json_path, png_dir):
            continue
        _require_instance_ids(root, split)
        gt_dir = os.path.dirname(json_path)
        quiet = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
        try:
            with quiet:
                convert2panoptic(cityscapesPath=gt_dir, outputFolder=gt_dir, useTrainId=False,
                                 setNames=[split])
        except SystemExit:  # cityscapesscripts exits when it finds no instanceIds file
            raise ValueError(f"cityscapesscripts' createPanopticImgs failed on '{gt_dir}' "
                             f"({split})") from None
        converted.append(split)
    return converted


def prepare_cityscapes(root: Optional[str] = None, nproc: Optional[int] = None,
                       progress: bool = True, panoptic: bool = False) -> Dict[str, int]:
    """Convert the missing train-id labels under ``<root>/cityscapes`` and (re)write the train
    split's RCS statistics when they changed; returns counts of converted/skipped labels.
    ``panoptic``: then ``prepare_cityscapes_panoptic`` (``panoptic_converted``: its splits)."""
    root = dataset_root() if root is None else root
    nproc = nproc or os.cpu_count() or 1
    jobs = {split: pending_conversions(root, split) for split in SPLITS}  # check all first
    cityscapes_dir = CITYSCAPES.dataset_dir(root)
    stats = {"converted": 0, "replaced": 0, "skipped": 0, "rcs_stats_written": 0}
    counted: Dict[str, Dict[str, int]] = {}
    for split, (todo, labels) in jobs.items():
        done = parallel_map(convert, todo, nproc, f"cityscapes {split} labels", progress)
        if split == "train":
            counted = dict(done)
        stats["converted"] += len(todo)
        stats["replaced"] += sum(job.replaces_damaged for job in todo)
        stats["skipped"] += len(labels) - len(todo)
    train_labels = jobs["train"][1]
    keys = [os.path.relpath(path, cityscapes_dir) for path in train_labels]
    if counted or not _stats_complete(cityscapes_dir, keys):
        write_rcs_stats(cityscapes_dir, train_labels, counted, nproc, progress)
        stats["rcs_stats_written"] = 1
    if panoptic:
        stats["panoptic_converted"] = prepare_cityscapes_panoptic(root, progress)
    return stats


def _summary(args, stats: Dict) -> str:
    text = (f"cityscapes: {stats['converted']} labels converted"
            f"{replaced_note(stats['replaced'])}, {stats['skipped']} already "
            f"there{', rcs_stats.json written' if stats['rcs_stats_written'] else ''}")
    if "panoptic_converted" in stats:
        done = stats["panoptic_converted"]
        text += (f"; panoptic ground truth written for {', '.join(done)}" if done
                 else "; panoptic ground truth already there")
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = prepare_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--panoptic", action="store_true",
                        help="also write the panoptic ground truth (cityscapesscripts' "
                             "createPanopticImgs) for cityscapes_fine_panoptic_{train,val}")
    return run_prepare_cli(parser, argv,
                           lambda args: prepare_cityscapes(args.root, args.nproc,
                                                           panoptic=args.panoptic),
                           _summary, (FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
