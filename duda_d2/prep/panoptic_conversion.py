"""Writing the panoptic ground truth of a downloaded data set whose raw labels carry instance ids
(SYNTHIA): one panoptic PNG per image and the split's panoptic JSON, in cityscapesscripts'
createPanopticImgs format (``panoptic_format``), where ``panoptic_datasets.py`` says.

Resumable like the label conversion: a panoptic PNG that exists and is whole is not converted
again, only read back for its segments; the JSON is written last, atomically, from all PNGs, so
a JSON present always describes a complete set of PNGs.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..data.datasets.file_check import file_problem
from ..data.datasets.layout import dataset_root, list_split
from ..data.datasets.panoptic_datasets import PanopticSplit
from .panoptic_format import read_id_map, segments_info, write_id_png, write_panoptic_json
from .process_pool import parallel_map

__all__ = ["PanopticSummary", "write_panoptic_ground_truth", "PANOPTIC_PNG_SUFFIX"]

PANOPTIC_PNG_SUFFIX = "_panoptic.png"  # <image stem>_panoptic.png, as Cityscapes' files


class PanopticSummary(NamedTuple):
    """What a panoptic conversion run did."""

    images: int
    converted: int  # replaced included
    skipped: int
    json_path: str
    replaced: int = 0  # converted again over an earlier run's empty or damaged PNG


class _Job(NamedTuple):
    raw_path: str
    out_path: str
    image_id: str
    image_file: str  # the image's file name, for the JSON's "images"


class _Done(NamedTuple):
    job: _Job
    segments: List[Dict]
    size: Tuple[int, int]
    converted: bool
    replaced: bool


def _convert_or_read(job: _Job, to_ids: Callable[[str], np.ndarray]) -> _Done:
    problem = file_problem(job.out_path)
    if problem is None:
        ids = read_id_map(job.out_path)
    else:
        ids = to_ids(job.raw_path)
        write_id_png(job.out_path, ids)
    return _Done(job, segments_info(ids), ids.shape[:2], problem is not None,
                 problem not in (None, "does not exist"))


def write_panoptic_ground_truth(split: PanopticSplit, to_ids: Callable[[str], np.ndarray],
                                root: Optional[str] = None, nproc: int = 1,
                                progress: bool = True) -> PanopticSummary:
    """Convert the raw label of every image of ``split`` with ``to_ids(raw_label_path)`` (a
    Cityscapes panoptic id map, ``panoptic_format.panoptic_id_map``; module-level when
    ``nproc > 1``) into ``<panoptic_root>/<stem>_panoptic.png``, then write ``panoptic_json``.

    The raw label of an image is the file with the image's path under the label folder (as
    the label conversion pairs them; run it first, it checks the downloaded files).
    """
    root = dataset_root() if root is None else root
    layout = split.layout
    layout_split = layout.split(split.split)
    ((image_folder, label_folder),) = layout_split.folders
    dataset_dir = layout.dataset_dir(root)
    out_dir = os.path.join(dataset_dir, split.panoptic_root)
    os.makedirs(out_dir, exist_ok=True)
    jobs = []
    for image, _ in list_split(layout, layout_split, root):
        relative = os.path.relpath(image, image_folder)
        stem = relative[:-len(layout.image_suffix)]
        jobs.append(_Job(os.path.join(dataset_dir, label_folder, relative),
                         os.path.join(out_dir, os.path.basename(stem) + PANOPTIC_PNG_SUFFIX),
                         layout_split.image_id_prefix + os.path.basename(stem),
                         os.path.basename(image)))
    done = parallel_map(functools.partial(_convert_or_read, to_ids=to_ids), jobs, nproc,
                        f"{layout.folder} panoptic", progress)
    done = sorted(done, key=lambda d: d.job.image_id)
    images = [{"id": d.job.image_id, "file_name": d.job.image_file, "height": int(d.size[0]),
               "width": int(d.size[1])} for d in done]
    annotations = [{"image_id": d.job.image_id, "file_name": os.path.basename(d.job.out_path),
                    "segments_info": d.segments} for d in done]
    json_path = os.path.join(dataset_dir, split.panoptic_json)
    write_panoptic_json(json_path, images, annotations)
    converted = sum(d.converted for d in done)
    return PanopticSummary(len(jobs), converted, len(jobs) - converted, json_path,
                           sum(d.replaced for d in done))
