"""Your own labelled data set with its own class list, prepared by
``datasets/prepare_labelled_folder.py`` and registered from the config:

    DATASETS:
      LABELLED_FOLDERS: ["my_source=datasets/my_source", "my_target_val=datasets/my_val"]
      SOURCE_TRAIN: ("my_source",)

A prepared folder holds ``dataset.json`` (the image folder, the class names and colours, how
source label ids were mapped), ``labels/`` (train-id PNGs of *that* class list, 255 = ignore) and
``rcs_stats.json`` (the rare-class-sampling statistics). Records pair each image with its label;
every label must have its image and no file may be empty or damaged, as for the project's own
data sets. Metadata carries the class list, so the evaluator and the visualiser use it, and
``tools/train_net.py`` checks that every data set of a run shares it with
``MODEL.SEM_SEG_HEAD.NUM_CLASSES``.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

from .cityscapes_classes import cityscapes_sem_seg_metadata
from .image_folders import parse_folder_specs, require_whole_user_files
from .layout import SHOWN_FILES, DatasetNotFoundError
from .registration import replace_dataset

__all__ = ["DESCRIPTION_FILE", "read_description", "labelled_folder_records",
           "register_labelled_folder", "register_config_labelled_folders"]

DESCRIPTION_FILE = "dataset.json"
PREPARE_SCRIPT = "datasets/prepare_labelled_folder.py"


def read_description(folder: str) -> Dict:
    """The ``dataset.json`` of a prepared folder; a clear error when it is not one."""
    path = os.path.join(folder, DESCRIPTION_FILE)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(
            f"'{folder}' is not a prepared labelled folder (no {DESCRIPTION_FILE}): run "
            f"`.venv/bin/python {PREPARE_SCRIPT} --images IMAGES --labels LABELS "
            f"--class-map MAP.json --output {folder}` (datasets/README.md, 'Your own data')")
    with open(path) as f:
        return json.load(f)


def labelled_folder_records(folder: str) -> List[Dict]:
    """Detectron2 records (image, train-id label) of a prepared folder, files checked."""
    description = read_description(folder)
    images = description["images"]
    records, missing = [], []
    for item in description["items"]:
        image = os.path.join(images, item["image"])
        label = os.path.join(folder, item["label"])
        if not os.path.isfile(image):
            missing.append(image)
            continue
        records.append({"file_name": image, "sem_seg_file_name": label,
                        "image_id": os.path.splitext(item["image"])[0]})
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} images of the prepared folder '{folder}' are gone, e.g. "
            f"{missing[:SHOWN_FILES]}: restore them or prepare the folder again")
    require_whole_user_files(
        [p for r in records for p in (r["file_name"], r["sem_seg_file_name"])],
        f"files of '{folder}'", f"Re-run {PREPARE_SCRIPT} (it rewrites damaged labels).")
    return records


def register_labelled_folder(name: str, folder: str) -> None:
    """Register the prepared ``folder`` as data set ``name`` (its class list in the metadata).

    A folder not prepared yet is registered too, so that a config naming it still loads; using
    the data set then raises the error that says how to prepare it."""
    folder = os.path.abspath(folder)
    try:
        description = read_description(folder)
    except DatasetNotFoundError:
        replace_dataset(name, lambda: labelled_folder_records(folder),
                        {"dataset_dir_name": folder, "rcs_prepare_script": PREPARE_SCRIPT})
        return
    metadata = cityscapes_sem_seg_metadata(
        stuff_classes=list(description["classes"]), stuff_colors=
        [tuple(c) for c in description["colors"]], domain=description.get("domain", "source"),
        dataset_dir_name=folder, rcs_prepare_script=PREPARE_SCRIPT)
    replace_dataset(name, lambda: labelled_folder_records(folder), metadata)


def register_config_labelled_folders(cfg) -> None:
    """Register ``DATASETS.LABELLED_FOLDERS`` ("NAME=PREPARED_FOLDER" each)."""
    for name, folder in parse_folder_specs(cfg.DATASETS.LABELLED_FOLDERS,
                                           "DATASETS.LABELLED_FOLDERS"):
        register_labelled_folder(name, folder)
