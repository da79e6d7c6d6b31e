"""Register every split of ``project_datasets.py`` with Detectron2's catalogs.

Registration is lazy: nothing is read until a dataset is used, and the dataset root
($DETECTRON2_DATASETS) is looked up then, so a missing folder raises a ``DatasetNotFoundError``
naming it and the fix. Records are ``file_name``, ``image_id`` and, for labelled splits,
``sem_seg_file_name``. Every label must exist, every train-id label must have its image, and
no image or label may be empty or damaged (a cheap header and end check of every file,
``layout.check_split_files``): each is an error listing the files and the fix.

Detectron2 registers ``cityscapes_fine_sem_seg_{train,val}`` itself, with its Cityscapes
evaluator and the dataset root frozen at import; they are replaced by the project's: the same
names, ``evaluator_type="sem_seg"`` and the 19 classes. The Cityscapes listing needs only the
images and the ``*_gtFine_labelTrainIds.png`` written by ``datasets/prepare_cityscapes.py``
(Detectron2's ``load_cityscapes_semantic`` opens every polygon file and checks one label).

Splits whose prepare script writes rare-class statistics carry ``dataset_dir_name`` and
``rcs_prepare_script`` in their metadata, so that a rare-class sampler can find
``dataset_root()/<dataset_dir_name>/rcs_stats.json`` and name the script that writes it.
"""
from __future__ import annotations

import copy
import os
from typing import Callable, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .cityscapes_classes import cityscapes_sem_seg_metadata
from .layout import DatasetLayout, SplitLayout, check_split_files, dataset_root, list_split
from .project_datasets import PROJECT_DATASETS

__all__ = ["load_split_records", "split_metadata", "replace_dataset", "register_datasets"]


def load_split_records(layout: DatasetLayout, split_name: str,
                       root: Optional[str] = None) -> List[Dict]:
    """Detectron2 records of split ``split_name`` of ``layout`` under ``root`` (default: the
    dataset root)."""
    root = dataset_root() if root is None else root
    split = layout.split(split_name)
    pairs = list_split(layout, split, root)
    check_split_files(layout, split, root, pairs)
    dataset_dir = layout.dataset_dir(root)
    records = []
    for image, label in pairs:
        stem = os.path.basename(image)[:-len(layout.image_suffix)]
        record = {"file_name": os.path.join(dataset_dir, image)}
        if label is not None:
            record["sem_seg_file_name"] = os.path.join(dataset_dir, label)
        record["image_id"] = split.image_id_prefix + stem
        records.append(record)
    return records


def split_metadata(layout: DatasetLayout, split: SplitLayout) -> Dict:
    """The 19-class metadata, plus the dataset's and the split's own entries."""
    extra = copy.deepcopy({**layout.metadata, **split.metadata})
    if split.has_rcs_stats:
        extra.update(dataset_dir_name=layout.folder, rcs_prepare_script=layout.prepare_script)
    return cityscapes_sem_seg_metadata(**extra)


def replace_dataset(name: str, loader: Callable[[], List[Dict]], metadata: Dict) -> None:
    """Register ``loader`` and ``metadata`` under ``name``, replacing any earlier entry.

    Detectron2's ``Metadata`` refuses to change an attribute once set, so an entry that
    Detectron2 (or an earlier call) registered is removed from both catalogs first.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def register_datasets() -> None:
    """Register every split of every project dataset (lazily; nothing is read here)."""
    for layout in PROJECT_DATASETS:
        for split in layout.splits:
            def load(layout=layout, name=split.name):
                return load_split_records(layout, name)

            replace_dataset(split.name, load, split_metadata(layout, split))
        for subset in layout.subsets:
            def load_subset(layout=layout, subset=subset):
                records = load_split_records(layout, subset.split)
                start, stop = subset.bounds(len(records))
                return records[start:stop]

            metadata = {**split_metadata(layout, layout.split(subset.split)), **subset.metadata}
            replace_dataset(subset.name, load_subset, metadata)
