"""Register the embedded synthetic "game -> real" benchmark (``datasets/prepare_synthetic.py``).

Layout under ``$DETECTRON2_DATASETS/synthetic_uda/``: ``{source,target}/{train,val}/images/*.png``
with the train-id label maps of the same name under ``labels/``. Registration is lazy: nothing
is read until a dataset is used.
"""
from __future__ import annotations

import os
from typing import Dict, List

from .cityscapes_classes import cityscapes_sem_seg_metadata
from .paths import DatasetNotFoundError, dataset_root, require_folder
from .real_datasets import replace_dataset

__all__ = ["SYNTHETIC_SPLITS", "load_synthetic_split", "register_synthetic"]

PREPARE_SCRIPT = "datasets/prepare_synthetic.py"
SYNTHETIC_SPLITS = {
    "synthetic_uda_source_train": ("source", "train"),
    "synthetic_uda_target_train": ("target", "train"),
    "synthetic_uda_target_val": ("target", "val"),
}


def load_synthetic_split(root: str, domain: str, split: str) -> List[Dict]:
    """Detectron2 records (file_name, sem_seg_file_name, height, width) of one split."""
    split_dir = require_folder(os.path.join(root, "synthetic_uda", domain, split),
                               PREPARE_SCRIPT, "synthetic dataset folder")
    image_dir = require_folder(os.path.join(split_dir, "images"), PREPARE_SCRIPT)
    label_dir = require_folder(os.path.join(split_dir, "labels"), PREPARE_SCRIPT)
    names = sorted(f for f in os.listdir(image_dir) if f.endswith(".png"))
    if not names:
        raise DatasetNotFoundError(f"no images in '{image_dir}'; run `.venv/bin/python "
                                   f"{PREPARE_SCRIPT}` to (re)create the synthetic dataset")
    missing = [n for n in names if not os.path.isfile(os.path.join(label_dir, n))]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} label files missing in '{label_dir}' (first: {missing[0]}); the "
            f"dataset is incomplete: run `.venv/bin/python {PREPARE_SCRIPT}` again")
    return [{"file_name": os.path.join(image_dir, n),
             "sem_seg_file_name": os.path.join(label_dir, n),
             "image_id": f"{domain}_{split}_{os.path.splitext(n)[0]}"} for n in names]


def register_synthetic(root: str = None) -> None:
    """Register the three synthetic splits under ``root`` (default: the dataset root)."""
    for name, (domain, split) in SYNTHETIC_SPLITS.items():
        def load(domain=domain, split=split):
            return load_synthetic_split(root or dataset_root(), domain, split)

        replace_dataset(name, load, cityscapes_sem_seg_metadata(
            domain=domain, dataset_dir_name="synthetic_uda", rcs_prepare_script=PREPARE_SCRIPT))
