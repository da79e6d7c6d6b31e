"""Label conversion to Cityscapes train ids, and the whole conversion of a labelled source
dataset (GTA5, SYNTHIA).

Both source datasets ship one raw label file per image, under the image's file name, in their
own id space. ``datasets/prepare_gta5.py`` and ``datasets/prepare_synthia.py`` differ only in how
they read those ids and map them to the 19 Cityscapes train ids; everything else lives here once:
checking the extracted folders, pairing images with labels, checking that no image or raw label
is empty or damaged (a cheap header and end check, before converting anything), converting (or
skipping what is already converted, rewriting converted labels that are damaged), and writing
the rare-class-sampling statistics. Folders and file names come from the datasets' layouts
(``duda_d2.data.datasets.project_datasets``), which registration reads too, so the two cannot
drift apart.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from ..data.datasets.file_check import file_problem
from ..data.datasets.layout import (DatasetLayout, DatasetNotFoundError, dataset_error,
                                    dataset_root, iter_files, list_split, require_folder,
                                    require_whole_files)
from .command_line import prepare_argument_parser, replaced_note, run_prepare_cli
from .png_files import write_png
from .process_pool import parallel_map
from .rcs_stats_computation import class_pixel_counts, save_rcs_stats

__all__ = ["id_to_train_id_lut", "apply_lut", "LabelFormatError", "ConversionSummary",
           "convert_source_labels", "convert_source_labels_cli"]


def id_to_train_id_lut(mapping: Mapping[int, int], ignore_label: int = 255,
                       size: int = 256) -> np.ndarray:
    """A lookup table sending each raw id to its train id, every other id to ``ignore_label``."""
    lut = np.full(size, ignore_label, dtype=np.uint8)
    for raw, train in mapping.items():
        lut[raw] = train
    return lut


def apply_lut(ids: np.ndarray, lut: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """Map raw ids through ``lut``; ids beyond the table become ``ignore_label`` (uint8)."""
    ids = np.asarray(ids)
    inside = ids < len(lut)
    train = lut[np.where(inside, ids, 0)]
    return np.where(inside, train, ignore_label).astype(np.uint8)


class LabelFormatError(ValueError):
    """A raw label file is not in the format its dataset ships."""


class ConversionSummary(NamedTuple):
    """What a conversion run did."""

    images: int
    converted: int  # replaced included
    skipped: int  # already converted by an earlier run
    stats_path: str
    replaced: int = 0  # converted again: an earlier run's file was empty or damaged


class _LabelJob(NamedTuple):
    raw_path: str
    out_path: str
    stats_key: str  # the converted file, relative to the dataset folder


def _half_extracted_error(layout: DatasetLayout, root: str, what: str, names: List[str]
                          ) -> DatasetNotFoundError:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return dataset_error(
        layout, root, f"{layout.title} in '{os.path.abspath(layout.dataset_dir(root))}' looks "
        f"half-extracted: {len(names)} {what} ({shown}); extract every image and label archive "
        f"completely")


def _label_jobs(layout: DatasetLayout, root: str) -> List[_LabelJob]:
    """One job per image, after checking that images and raw labels pair up one to one.

    The raw label of an image has the image's path under the label folder.
    """
    (split,) = layout.splits
    ((image_folder, label_folder),) = split.folders
    pairs = list_split(layout, split, root)
    dataset_dir = layout.dataset_dir(root)
    label_dir = require_folder(layout, root, label_folder, "label folder")
    suffix = layout.image_suffix
    stems = [os.path.relpath(image, image_folder)[:-len(suffix)] for image, _ in pairs]
    raw = {p[:-len(suffix)] for p in iter_files(label_dir, suffix)
           if not p.endswith(layout.label_suffix)}
    converted = {p[:-len(layout.label_suffix)] for p in iter_files(label_dir, layout.label_suffix)}
    unlabelled = [s + suffix for s in stems if s not in raw and s not in converted]
    if unlabelled:
        raise _half_extracted_error(layout, root, f"of {len(stems)} images have no label file "
                                    f"in '{label_dir}'", unlabelled)
    orphans = sorted(raw - set(stems))
    if orphans:
        raise _half_extracted_error(
            layout, root, "label files have no image in "
            f"'{os.path.abspath(os.path.join(dataset_dir, image_folder))}'",
            [s + suffix for s in orphans])
    jobs = [_LabelJob(os.path.join(label_dir, s + suffix), os.path.join(dataset_dir, label),
                      label) for s, (_, label) in zip(stems, pairs)]
    require_whole_files(layout, root, f"images and raw labels of {layout.title}",
                        [os.path.abspath(os.path.join(dataset_dir, image)) for image, _ in pairs]
                        + [job.raw_path for job in jobs])
    return jobs


def _read_train_ids(path: str) -> Optional[np.ndarray]:
    """The converted label ``path``, or None if it is missing, empty, damaged or not a
    single-channel uint8 PNG (then it is converted again)."""
    if file_problem(path) is not None:
        return None
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2 or label.dtype != np.uint8:
        return None
    return label


class _Done(NamedTuple):
    stats_key: str
    counts: Dict[str, int]
    converted: bool
    replaced: bool  # converted over an earlier run's damaged file


def _convert_or_count(job: _LabelJob, to_train_ids: Callable[[str], np.ndarray]) -> _Done:
    """Convert one raw label unless a whole converted file exists; returns its pixel counts."""
    train_ids = _read_train_ids(job.out_path)
    if train_ids is not None:
        return _Done(job.stats_key, class_pixel_counts(train_ids), False, False)
    replaced = os.path.exists(job.out_path)
    train_ids = to_train_ids(job.raw_path)
    write_png(job.out_path, train_ids)
    return _Done(job.stats_key, class_pixel_counts(train_ids), True, replaced)


def convert_source_labels(layout: DatasetLayout, to_train_ids: Callable[[str], np.ndarray],
                          root: Optional[str] = None, nproc: int = 1,
                          progress: bool = True) -> ConversionSummary:
    """Write the train-id label (``<stem>_labelTrainIds.png``) next to every raw label, then
    the RCS statistics.

    ``to_train_ids(raw_label_path)`` returns the (H, W) uint8 train-id map (255 = ignore); it
    must be picklable (a module-level function) when ``nproc > 1``. Files converted by an
    earlier run are not rewritten, only read for the statistics, so an interrupted run can be
    started again; a converted file that is empty, damaged or not a uint8 label is converted
    again.
    """
    root = dataset_root() if root is None else root
    jobs = _label_jobs(layout, root)
    results = parallel_map(functools.partial(_convert_or_count, to_train_ids=to_train_ids),
                           jobs, nproc, desc=layout.folder, progress=progress)
    stats_path = save_rcs_stats(layout.dataset_dir(root),
                                {done.stats_key: done.counts for done in results})
    converted = sum(done.converted for done in results)
    return ConversionSummary(len(jobs), converted, len(jobs) - converted, stats_path,
                             sum(done.replaced for done in results))


def convert_source_labels_cli(layout: DatasetLayout, to_train_ids: Callable[[str], np.ndarray],
                              argv: Optional[Sequence[str]], description: str) -> int:
    """The command line of a source dataset's prepare script; returns the exit status.

    A missing, half-extracted or malformed dataset prints the error and returns 2.
    """
    return run_prepare_cli(
        prepare_argument_parser(description), argv,
        lambda args: convert_source_labels(layout, to_train_ids, args.root, args.nproc),
        lambda args, s: (f"{layout.folder}: {s.images} label files, {s.converted} converted"
                         f"{replaced_note(s.replaced)}, {s.skipped} already converted; "
                         f"statistics in {s.stats_path}"),
        (DatasetNotFoundError, LabelFormatError))
