"""Register the panoptic splits of ``panoptic_datasets.py`` with Detectron2's catalogs.

Records follow Detectron2's ``cityscapes_fine_panoptic_*`` (``load_cityscapes_panoptic``):
``file_name``, ``image_id``, ``sem_seg_file_name`` (train-id PNG), ``pan_seg_file_name`` (RGB
id PNG) and ``segments_info`` with ``category_id`` turned into the contiguous train id.
Like the semantic registration, loading is lazy and checked: the images and train-id labels as
``layout.check_split_files`` checks them, then the panoptic JSON (missing, unreadable), images
without an annotation and annotations without an image, and empty or damaged panoptic PNGs --
each one error that names the files, the dataset root and the prepare command.

Detectron2 registers ``cityscapes_fine_panoptic_{train,val}`` itself, with the dataset root
frozen at import and assertions for errors; they are replaced by the project's: the same
names, records and metadata keys (``panoptic_root``, ``panoptic_json``, ``image_root``,
``gt_dir``, ``evaluator_type="cityscapes_panoptic_seg"``, ``label_divisor=1000``, the 19
thing/stuff classes and id maps). The metadata's paths follow ``$DETECTRON2_DATASETS`` when
they are read (``PanopticMetadata``), as the records do.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata

from .layout import (DatasetFileError, dataset_error, dataset_root, require_whole_files,
                     SHOWN_FILES)
from .panoptic_classes import (STUFF_DATASET_ID_TO_CONTIGUOUS_ID,
                               THING_DATASET_ID_TO_CONTIGUOUS_ID, cityscapes_panoptic_metadata)
from .panoptic_datasets import PANOPTIC_SPLITS, PanopticSplit
from .registration import load_split_records, split_metadata

__all__ = ["PanopticMetadata", "load_panoptic_records", "panoptic_split_metadata",
           "register_panoptic_datasets"]


class PanopticMetadata(Metadata):
    """Detectron2 metadata whose file locations (``panoptic_root``, ``panoptic_json``,
    ``image_root`` and any other name in ``_relative_paths``) are joined to the dataset root
    when read, so that they follow ``$DETECTRON2_DATASETS`` as the records do."""

    _PATH_KEYS = ("panoptic_root", "panoptic_json", "image_root", "gt_dir")

    def __getattribute__(self, key):
        if key in type(self)._PATH_KEYS:
            paths = object.__getattribute__(self, "__dict__").get("_relative_paths", {})
            if key in paths:
                return os.path.join(dataset_root(), paths[key])
        return super().__getattribute__(key)

    def as_dict(self) -> Dict:
        """All entries, the paths resolved against the current dataset root."""
        out = {k: v for k, v in self.__dict__.items() if k != "_relative_paths"}
        out.update({k: getattr(self, k) for k in self.__dict__.get("_relative_paths", {})})
        return out


def _relative_paths(split: PanopticSplit) -> Dict[str, str]:
    folder = split.layout.folder
    paths = {"panoptic_root": split.panoptic_root, "panoptic_json": split.panoptic_json,
             "image_root": split.layout.split(split.split).folders[0][0], **split.extra_paths}
    return {key: os.path.join(folder, path) for key, path in paths.items()}


def panoptic_split_metadata(split: PanopticSplit) -> Dict:
    """The panoptic metadata of ``split`` (paths excluded): the layout's and split's own
    entries (RCS statistics, class subsets, domain) plus ``cityscapes_panoptic_metadata``."""
    semantic = split_metadata(split.layout, split.layout.split(split.split))
    extra = {k: v for k, v in semantic.items()
             if k not in ("stuff_classes", "stuff_colors", "ignore_label", "evaluator_type")}
    return cityscapes_panoptic_metadata(**extra)


def _read_json(split: PanopticSplit, root: str) -> Dict:
    path = os.path.abspath(os.path.join(split.layout.dataset_dir(root), split.panoptic_json))
    if not os.path.isfile(path):
        raise dataset_error(split.layout, root, f"the panoptic annotations of {split.name} "
                            f"'{path}' do not exist", downloaded=True)
    try:
        with open(path) as f:
            payload = json.load(f)
        payload["annotations"]
    except (ValueError, KeyError, TypeError) as e:
        raise dataset_error(split.layout, root, f"the panoptic annotations '{path}' of "
                            f"{split.name} are damaged ({type(e).__name__}: {e})",
                            downloaded=True, error_type=DatasetFileError) from None
    return payload


def _listing(items: List[str]) -> List[str]:
    more = len(items) - SHOWN_FILES
    return items[:SHOWN_FILES] + ([f"... and {more} more"] if more > 0 else [])


def _contiguous(split: PanopticSplit, root: str, segments: List[Dict], json_path: str,
                maps: Dict[int, int]) -> List[Dict]:
    out = []
    for segment in segments:
        category = segment["category_id"]
        if category not in maps:
            raise dataset_error(
                split.layout, root, f"'{json_path}' holds category id {category}, which is not "
                f"one of the 19 Cityscapes evaluation classes (label ids {sorted(maps)}): "
                f"made by another tool or with --use-train-id?", downloaded=True,
                error_type=DatasetFileError)
        out.append({**segment, "category_id": maps[category]})
    return out


def load_panoptic_records(split: PanopticSplit, root: Optional[str] = None) -> List[Dict]:
    """Detectron2 panoptic records of ``split`` under ``root`` (default: the dataset root)."""
    root = dataset_root() if root is None else root
    layout = split.layout
    records = load_split_records(layout, split.split, root)
    payload = _read_json(split, root)
    json_path = os.path.abspath(os.path.join(layout.dataset_dir(root), split.panoptic_json))
    annotations = {a["image_id"]: a for a in payload["annotations"]}
    unannotated = [r["file_name"] for r in records if r["image_id"] not in annotations]
    if unannotated:
        raise dataset_error(
            layout, root, f"{len(unannotated)} of {len(records)} images of {split.name} have no "
            f"annotation in '{json_path}'", downloaded=True,
            details=_listing([os.path.abspath(p) for p in unannotated]))
    image_ids = {r["image_id"] for r in records}
    orphans = sorted(str(i) for i in annotations if i not in image_ids)
    if orphans:
        raise dataset_error(
            layout, root, f"{len(orphans)} annotations of '{json_path}' have no image in "
            f"{split.name} (images deleted or extracted only in part?)",
            details=_listing([f"image_id {i}" for i in orphans]))
    pan_dir = os.path.join(layout.dataset_dir(root), split.panoptic_root)
    maps = {**THING_DATASET_ID_TO_CONTIGUOUS_ID, **STUFF_DATASET_ID_TO_CONTIGUOUS_ID}
    for record in records:
        annotation = annotations[record["image_id"]]
        record["pan_seg_file_name"] = os.path.join(pan_dir, annotation["file_name"])
        record["segments_info"] = _contiguous(split, root, annotation["segments_info"],
                                              json_path, maps)
    pngs = [os.path.abspath(r["pan_seg_file_name"]) for r in records]
    require_whole_files(layout, root, f"panoptic PNGs of {split.name}", pngs, set(pngs))
    return records


def _register(split: PanopticSplit) -> None:
    for catalog in (DatasetCatalog, MetadataCatalog):
        if split.name in catalog.list():
            catalog.remove(split.name)
    DatasetCatalog.register(split.name, lambda split=split: load_panoptic_records(split))
    MetadataCatalog[split.name] = PanopticMetadata(name=split.name)
    MetadataCatalog.get(split.name).set(_relative_paths=_relative_paths(split),
                                        **panoptic_split_metadata(split))


def register_panoptic_datasets() -> None:
    """Register every panoptic split (lazily), replacing Detectron2's Cityscapes ones."""
    for split in PANOPTIC_SPLITS:
        _register(split)
