"""Register the labelled source datasets ``gta5_train`` and ``synthia_train``.

Their labels must first be converted to train ids by ``datasets/prepare_gta5.py`` /
``datasets/prepare_synthia.py`` (layouts: ``source_conversion.py``, ``datasets/README.md``).
Registration is lazy: nothing is read until a dataset is used, and the dataset root
($DETECTRON2_DATASETS) is looked up then. The metadata carries ``dataset_dir_name`` and
``rcs_prepare_script`` so that a rare-class sampler can find
``dataset_root()/<dataset_dir_name>/rcs_stats.json`` and name the script that writes it.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .cityscapes_classes import (SYNTHIA_13_CLASSES, SYNTHIA_16_CLASSES,
                                 cityscapes_sem_seg_metadata)
from .paths import DatasetNotFoundError, dataset_root
from .source_conversion import (GTA5_LAYOUT, SYNTHIA_LAYOUT, SourceLayout, list_images,
                                missing_folder_error, train_id_path)

__all__ = ["SOURCE_DATASETS", "load_source_dataset", "register_sources"]

SOURCE_DATASETS: Dict[str, SourceLayout] = {"gta5_train": GTA5_LAYOUT,
                                            "synthia_train": SYNTHIA_LAYOUT}


def load_source_dataset(layout: SourceLayout, root: Optional[str] = None) -> List[Dict]:
    """Detectron2 records (file_name, sem_seg_file_name, image_id), one per image.

    Every image needs its converted ``_labelTrainIds.png``; if any is missing the error tells
    to run the prepare script (which is resumable).
    """
    root = dataset_root() if root is None else root
    stems = list_images(layout, root)
    image_dir, label_dir = layout.image_folder(root), layout.label_folder(root)
    if not os.path.isdir(label_dir):
        raise missing_folder_error(layout, root, label_dir)
    records = [{"file_name": os.path.join(image_dir, stem + ".png"),
                "sem_seg_file_name": train_id_path(label_dir, stem),
                "image_id": stem.replace(os.sep, "/")} for stem in stems]
    missing = [r["sem_seg_file_name"] for r in records
               if not os.path.isfile(r["sem_seg_file_name"])]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of {len(records)} {layout.title} images have no converted label "
            f"(first: '{os.path.abspath(missing[0])}'); run `.venv/bin/python "
            f"{layout.prepare_script}` (with $DETECTRON2_DATASETS or --root set to "
            f"'{os.path.abspath(root)}') to convert the labels.")
    return records


def _metadata(layout: SourceLayout) -> Dict:
    extra = {"dataset_dir_name": layout.dir_name, "rcs_prepare_script": layout.prepare_script}
    if layout is SYNTHIA_LAYOUT:  # no terrain, truck, train: report the SYNTHIA benchmark subsets
        extra["eval_class_subsets"] = {"mIoU16": list(SYNTHIA_16_CLASSES),
                                       "mIoU13": list(SYNTHIA_13_CLASSES)}
    return cityscapes_sem_seg_metadata(**extra)


def register_sources(root: Optional[str] = None) -> None:
    """Register ``gta5_train`` and ``synthia_train`` under ``root`` (default: the dataset root)."""
    for name, layout in SOURCE_DATASETS.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

        def load(layout=layout):
            return load_source_dataset(layout, root)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(**_metadata(layout))
