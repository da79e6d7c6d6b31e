"""Register Cityscapes (fine) semantic segmentation the way this project evaluates it.

Detectron2 registers ``cityscapes_fine_sem_seg_{train,val}`` at import with its own Cityscapes
evaluator and the dataset root frozen at that moment. This module replaces both entries with
the project's contract: the same names, ``evaluator_type="sem_seg"``, the 19 classes of
``cityscapes_sem_seg_metadata()``, a root read from ``$DETECTRON2_DATASETS`` when the dataset is
loaded, and errors that say which folder is missing and what to run.

The loader lists the files itself instead of calling Detectron2's ``load_cityscapes_semantic``:
that function opens every ``*_gtFine_polygons.json`` (for a height/width the mapper re-reads from
the image anyway), asserts that ``*_gtFine_instanceIds.png`` exists, and checks only the first
train-id label; the listing here needs only the images and the ``*_gtFine_labelTrainIds.png``
files written by ``datasets/prepare_cityscapes.py`` and checks every one of them.
"""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional

from .cityscapes_classes import cityscapes_sem_seg_metadata
from .paths import dataset_root
from .real_datasets import CITYSCAPES, incomplete_dataset_error, replace_dataset, require_dir

__all__ = ["CITYSCAPES_SPLITS", "CityscapesImage", "list_cityscapes_split",
           "load_cityscapes_sem_seg", "register_cityscapes"]

CITYSCAPES_SPLITS = {"cityscapes_fine_sem_seg_train": "train",
                     "cityscapes_fine_sem_seg_val": "val"}
IMAGE_SUFFIX = "_leftImg8bit.png"
GT_INFIX = "_gtFine_"
TRAIN_ID_SUFFIX = "labelTrainIds.png"


class CityscapesImage(NamedTuple):
    """One image; its annotation files are ``gt_prefix`` + ``labelIds.png``, ... ."""
    image: str
    gt_prefix: str

    @property
    def train_id_label(self) -> str:
        return self.gt_prefix + TRAIN_ID_SUFFIX


def _split_dirs(root: str, split: str) -> List[str]:
    """``leftImg8bit/<split>`` and ``gtFine/<split>``, each checked to exist."""
    base = require_dir(CITYSCAPES, root, os.path.join(root, CITYSCAPES.folder), "folder")
    dirs = []
    for kind, archive in (("leftImg8bit", CITYSCAPES.archives[0]),
                          ("gtFine", CITYSCAPES.archives[1])):
        top = require_dir(CITYSCAPES, root, os.path.join(base, kind),
                          f"folder (from {archive})")
        dirs.append(require_dir(CITYSCAPES, root, os.path.join(top, split),
                                f"{split} folder (from {archive}, half-extracted?)"))
    return dirs


def _cities(root: str, image_dir: str, gt_dir: str) -> List[str]:
    """Cities of ``image_dir``; each must have its annotation folder in ``gt_dir``."""
    cities = sorted(c for c in os.listdir(image_dir)
                    if os.path.isdir(os.path.join(image_dir, c)))
    if not cities:
        raise incomplete_dataset_error(
            CITYSCAPES, root, f"no city folders in '{os.path.abspath(image_dir)}'")
    missing = [c for c in cities if not os.path.isdir(os.path.join(gt_dir, c))]
    if missing:
        raise incomplete_dataset_error(
            CITYSCAPES, root, f"'{os.path.abspath(gt_dir)}' lacks the annotations of the cities "
            f"{missing} that '{os.path.abspath(image_dir)}' has ({CITYSCAPES.archives[1]} "
            f"half-extracted?)")
    return cities


def list_cityscapes_split(root: str, split: str) -> List[CityscapesImage]:
    """Every ``*_leftImg8bit.png`` of ``split`` under ``root``, after checking the folders."""
    image_dir, gt_dir = _split_dirs(root, split)
    items = []
    for city in _cities(root, image_dir, gt_dir):
        for name in sorted(os.listdir(os.path.join(image_dir, city))):
            if name.endswith(IMAGE_SUFFIX):
                stem = name[:-len(IMAGE_SUFFIX)]
                items.append(CityscapesImage(os.path.join(image_dir, city, name),
                                             os.path.join(gt_dir, city, stem + GT_INFIX)))
    if not items:
        raise incomplete_dataset_error(
            CITYSCAPES, root, f"no *{IMAGE_SUFFIX} images in '{os.path.abspath(image_dir)}'")
    return items


def load_cityscapes_sem_seg(split: str, root: Optional[str] = None) -> List[Dict]:
    """Records (file_name, sem_seg_file_name, image_id) of ``split``; every label must exist.

    Train records keep their labels too: Cityscapes is the labelled source of
    Cityscapes -> ACDC / Dark Zurich, and the UDA loader drops target labels itself.
    """
    root = dataset_root() if root is None else root
    items = list_cityscapes_split(root, split)
    missing = [it.train_id_label for it in items if not os.path.isfile(it.train_id_label)]
    if missing:
        raise incomplete_dataset_error(
            CITYSCAPES, root, f"{len(missing)} of {len(items)} Cityscapes {split} images have no "
            f"train-id label (first: '{os.path.abspath(missing[0])}')", extracted=True)
    return [{"file_name": it.image, "sem_seg_file_name": it.train_id_label,
             "image_id": os.path.basename(it.gt_prefix)[:-len(GT_INFIX)]} for it in items]


def register_cityscapes() -> None:
    """Replace Detectron2's ``cityscapes_fine_sem_seg_{train,val}`` with the project's."""
    for name, split in CITYSCAPES_SPLITS.items():
        extra = {}
        if split == "train":  # where a rare-class sampler finds rcs_stats.json
            extra = {"dataset_dir_name": CITYSCAPES.folder,
                     "rcs_prepare_script": CITYSCAPES.prepare_script}

        def load(split=split):
            return load_cityscapes_sem_seg(split)

        replace_dataset(name, load, cityscapes_sem_seg_metadata(**extra))
