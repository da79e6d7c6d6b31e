"""Layouts of the labelled source datasets (GTA5, SYNTHIA) and the conversion of their labels.

Both datasets ship one raw label file per image, under the image's file name, in their own id
space. ``datasets/prepare_gta5.py`` and ``datasets/prepare_synthia.py`` differ only in how they
read those ids and map them to the 19 Cityscapes train ids; everything else lives here once:
checking the extracted folders, pairing images with labels, converting (or skipping what is
already converted), and writing the rare-class-sampling statistics. The registration
(``register_sources.py``) reads the same layouts, so the two cannot drift apart.

Only numpy, OpenCV and the standard library are imported (through ``preparation``): the prepare
scripts load this file without importing torch or Detectron2.
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..preparation import (class_pixel_counts, iter_files, parallel_map, prepare_arguments,
                           save_rcs_stats, write_png)
from .paths import DatasetNotFoundError, dataset_root

__all__ = ["TRAIN_ID_SUFFIX", "SourceLayout", "GTA5_LAYOUT", "SYNTHIA_LAYOUT", "LabelFormatError",
           "ConversionSummary", "missing_folder_error", "list_images", "train_id_path",
           "apply_lut", "convert_source_labels", "prepare_cli"]

TRAIN_ID_SUFFIX = "_labelTrainIds.png"
_PNG = ".png"


@dataclass(frozen=True)
class SourceLayout:
    """Where a source dataset's files are, relative to the dataset root."""

    title: str  # shown in messages
    dir_name: str  # the dataset's folder under the root
    image_dir: str  # relative to the dataset folder
    label_dir: str  # raw labels (same file names as the images) and the converted ones
    prepare_script: str  # relative to the repository
    download_url: str

    def folder(self, root: str) -> str:
        """The dataset folder under ``root``."""
        return os.path.join(root, self.dir_name)

    def image_folder(self, root: str) -> str:
        """The folder holding the images."""
        return os.path.join(root, self.dir_name, self.image_dir)

    def label_folder(self, root: str) -> str:
        """The folder holding the raw and the converted labels."""
        return os.path.join(root, self.dir_name, self.label_dir)


GTA5_LAYOUT = SourceLayout(
    title="GTA5", dir_name="gta5", image_dir="images", label_dir="labels",
    prepare_script="datasets/prepare_gta5.py",
    download_url="https://download.visinf.tu-darmstadt.de/data/from_games/")
SYNTHIA_LAYOUT = SourceLayout(
    title="SYNTHIA-RAND-CITYSCAPES", dir_name="synthia", image_dir="RGB",
    label_dir=os.path.join("GT", "LABELS"), prepare_script="datasets/prepare_synthia.py",
    download_url="https://synthia-dataset.net/downloads/")


class LabelFormatError(ValueError):
    """A raw label file is not in the format its dataset ships."""


class ConversionSummary(NamedTuple):
    """What a conversion run did."""

    images: int
    converted: int
    skipped: int  # already converted by an earlier run
    stats_path: str


class _LabelJob(NamedTuple):
    raw_path: str
    out_path: str
    stats_key: str  # the converted file, relative to the dataset folder


def _fix_hint(layout: SourceLayout, root: str) -> str:
    return (f"The dataset root is '{os.path.abspath(root)}' (set by $DETECTRON2_DATASETS, or "
            f"by --root of the prepare script). Download {layout.title} from "
            f"{layout.download_url}, extract it there as described in datasets/README.md, then "
            f"run `.venv/bin/python {layout.prepare_script}`.")


def missing_folder_error(layout: SourceLayout, root: str, path: str) -> DatasetNotFoundError:
    """The error for a missing dataset folder: names it, the dataset root and the fix."""
    return DatasetNotFoundError(f"{layout.title} folder '{os.path.abspath(path)}' does not "
                                f"exist. {_fix_hint(layout, root)}")


def _require(layout: SourceLayout, root: str, path: str) -> str:
    if not os.path.isdir(path):
        raise missing_folder_error(layout, root, path)
    return path


def list_images(layout: SourceLayout, root: str) -> List[str]:
    """Image paths relative to the image folder, without ``.png``; errors if there are none."""
    _require(layout, root, layout.folder(root))
    image_dir = _require(layout, root, layout.image_folder(root))
    stems = [p[:-len(_PNG)] for p in iter_files(image_dir, _PNG)]
    if not stems:
        raise DatasetNotFoundError(f"no {_PNG} images in '{os.path.abspath(image_dir)}'. "
                                   f"{_fix_hint(layout, root)}")
    return stems


def train_id_path(label_dir: str, stem: str) -> str:
    """The converted (train-id) label file of image ``stem``."""
    return os.path.join(label_dir, stem + TRAIN_ID_SUFFIX)


def _half_extracted_error(layout: SourceLayout, root: str, what: str, names: List[str]
                          ) -> DatasetNotFoundError:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return DatasetNotFoundError(
        f"{layout.title} in '{os.path.abspath(layout.folder(root))}' looks half-extracted: "
        f"{len(names)} {what} ({shown}). Extract every image and label archive completely. "
        f"{_fix_hint(layout, root)}")


def _label_jobs(layout: SourceLayout, root: str) -> List[_LabelJob]:
    """One job per image, after checking that images and raw labels pair up one to one."""
    stems = list_images(layout, root)
    label_dir = _require(layout, root, layout.label_folder(root))
    raw = {p[:-len(_PNG)] for p in iter_files(label_dir, _PNG) if not p.endswith(TRAIN_ID_SUFFIX)}
    converted = {p[:-len(TRAIN_ID_SUFFIX)] for p in iter_files(label_dir, TRAIN_ID_SUFFIX)}
    unlabelled = [s + _PNG for s in stems if s not in raw and s not in converted]
    if unlabelled:
        raise _half_extracted_error(layout, root, f"of {len(stems)} images have no label file "
                                    f"in '{os.path.abspath(label_dir)}'", unlabelled)
    orphans = sorted(raw - set(stems))
    if orphans:
        raise _half_extracted_error(layout, root, "label files have no image in "
                                    f"'{os.path.abspath(layout.image_folder(root))}'",
                                    [s + _PNG for s in orphans])
    return [_LabelJob(os.path.join(label_dir, s + _PNG), train_id_path(label_dir, s),
                      os.path.join(layout.label_dir, s + TRAIN_ID_SUFFIX)) for s in stems]


def apply_lut(ids: np.ndarray, lut: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """Map raw ids through ``lut``; ids beyond the table become ``ignore_label`` (uint8)."""
    ids = np.asarray(ids)
    inside = ids < len(lut)
    train = lut[np.where(inside, ids, 0)]
    return np.where(inside, train, ignore_label).astype(np.uint8)


def _read_train_ids(path: str) -> np.ndarray:
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2 or label.dtype != np.uint8:
        raise LabelFormatError(f"converted label '{path}' is unreadable or not a single-channel "
                               f"uint8 PNG; delete it and run the prepare script again")
    return label


def _convert_or_count(job: _LabelJob, to_train_ids: Callable[[str], np.ndarray]
                      ) -> Tuple[str, Dict[str, int], bool]:
    """Convert one raw label unless done before; returns (stats key, pixel counts, converted)."""
    if os.path.exists(job.out_path):
        return job.stats_key, class_pixel_counts(_read_train_ids(job.out_path)), False
    train_ids = to_train_ids(job.raw_path)
    write_png(job.out_path, train_ids)
    return job.stats_key, class_pixel_counts(train_ids), True


def convert_source_labels(layout: SourceLayout, to_train_ids: Callable[[str], np.ndarray],
                          root: Optional[str] = None, nproc: int = 1,
                          progress: bool = True) -> ConversionSummary:
    """Write ``<stem>_labelTrainIds.png`` next to every raw label, then the RCS statistics.

    ``to_train_ids(raw_label_path)`` returns the (H, W) uint8 train-id map (255 = ignore); it
    must be picklable (a module-level function) when ``nproc > 1``. Files converted by an
    earlier run are not rewritten, only read for the statistics, so an interrupted run can be
    started again.
    """
    root = dataset_root() if root is None else root
    jobs = _label_jobs(layout, root)
    results = parallel_map(functools.partial(_convert_or_count, to_train_ids=to_train_ids),
                           jobs, nproc, desc=layout.dir_name, progress=progress)
    stats_path = save_rcs_stats(layout.folder(root), {key: counts for key, counts, _ in results})
    converted = sum(done for _, _, done in results)
    return ConversionSummary(len(jobs), converted, len(jobs) - converted, stats_path)


def prepare_cli(layout: SourceLayout, to_train_ids: Callable[[str], np.ndarray],
                argv: Optional[Sequence[str]], description: str) -> int:
    """The command line of a prepare script (``--root``, ``--nproc``); returns the exit status.

    A missing, half-extracted or malformed dataset prints the error and returns 2.
    """
    args = prepare_arguments(description, argv)
    try:
        summary = convert_source_labels(layout, to_train_ids, args.root, args.nproc)
    except (DatasetNotFoundError, LabelFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{layout.dir_name}: {summary.images} label files, {summary.converted} converted, "
          f"{summary.skipped} already converted; statistics in {summary.stats_path}")
    return 0
