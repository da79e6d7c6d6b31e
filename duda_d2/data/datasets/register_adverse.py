"""Register ACDC (``acdc_train``, ``acdc_val``: all four conditions) and Dark Zurich
(``dark_zurich_train``: unlabelled night images, ``dark_zurich_val``: labelled night images).

Registration is lazy: the files are listed under ``$DETECTRON2_DATASETS`` when a dataset is
loaded, with the layouts of ``adverse.py`` (the ones ``datasets/prepare_{acdc,dark_zurich}.py``
check), so a missing folder raises a ``DatasetNotFoundError`` naming it and the fix.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from .adverse import ACDC_LAYOUT, DARK_ZURICH_LAYOUT, IMAGE_SUFFIX, DatasetLayout, list_split
from .cityscapes_classes import cityscapes_sem_seg_metadata
from .paths import dataset_root
from .real_datasets import replace_dataset

__all__ = ["load_adverse_split", "register_adverse"]


def load_adverse_split(layout: DatasetLayout, split_name: str,
                       root: Optional[str] = None) -> List[Dict]:
    """Records (file_name, image_id and, for labelled splits, sem_seg_file_name)."""
    root = dataset_root() if root is None else root
    dataset_dir = os.path.join(root, layout.download.folder)
    records = []
    for image, label in list_split(root, layout, layout.split(split_name)):
        record = {"file_name": os.path.join(dataset_dir, image),
                  "image_id": os.path.basename(image)[:-len(IMAGE_SUFFIX)]}
        if label is not None:
            record["sem_seg_file_name"] = os.path.join(dataset_dir, label)
        records.append(record)
    return records


def register_adverse() -> None:
    """Register the ACDC and Dark Zurich splits (lazily; nothing is read here)."""
    for layout in (ACDC_LAYOUT, DARK_ZURICH_LAYOUT):
        for split in layout.splits:
            def load(layout=layout, name=split.name):
                return load_adverse_split(layout, name)

            replace_dataset(split.name, load, cityscapes_sem_seg_metadata())
