"""The Cityscapes panoptic categories and the metadata every panoptic data set carries.

The panoptic ground truth of every data set of the project follows cityscapesscripts'
``createPanopticImgs``: its category ids are Cityscapes *label ids* (road 7, ..., car 26,
bicycle 33), the 19 evaluation classes are the categories, and the 8 classes with instances
(person, rider, car, truck, bus, train, motorcycle, bicycle; train ids 11..18) are things.
Training uses the contiguous train ids 0..18, as Detectron2's ``cityscapes_fine_panoptic_*``
metadata maps them (``thing/stuff_dataset_id_to_contiguous_id``).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

from .cityscapes_classes import IGNORE_LABEL, STUFF_CLASSES, STUFF_COLORS, \
    cityscapes_sem_seg_metadata

__all__ = ["LABEL_DIVISOR", "PANOPTIC_EVALUATOR_TYPE", "PANOPTIC_CATEGORIES",
           "THING_TRAIN_IDS", "LABEL_ID_TO_TRAIN_ID", "TRAIN_ID_TO_LABEL_ID",
           "THING_DATASET_ID_TO_CONTIGUOUS_ID", "STUFF_DATASET_ID_TO_CONTIGUOUS_ID",
           "cityscapes_panoptic_metadata"]

LABEL_DIVISOR = 1000  # id = class * 1000 + instance, in the PNGs and in the model's label maps
PANOPTIC_EVALUATOR_TYPE = "cityscapes_panoptic_seg"

_EVAL_LABELS = [l for l in _CITYSCAPES_LABELS if not l.ignoreInEval]
assert sorted(l.trainId for l in _EVAL_LABELS) == list(range(len(STUFF_CLASSES))), \
    "cityscapesscripts' evaluation classes no longer are the 19 train ids"

# The "categories" of a panoptic JSON, as createPanopticImgs writes them (label-id order).
PANOPTIC_CATEGORIES: List[Dict] = [
    {"id": int(l.id), "name": l.name, "color": list(l.color), "supercategory": l.category,
     "isthing": 1 if l.hasInstances else 0} for l in _EVAL_LABELS]

LABEL_ID_TO_TRAIN_ID: Dict[int, int] = {int(l.id): int(l.trainId) for l in _EVAL_LABELS}
TRAIN_ID_TO_LABEL_ID: Dict[int, int] = {t: i for i, t in LABEL_ID_TO_TRAIN_ID.items()}
THING_DATASET_ID_TO_CONTIGUOUS_ID: Dict[int, int] = {
    int(l.id): int(l.trainId) for l in _EVAL_LABELS if l.hasInstances}
STUFF_DATASET_ID_TO_CONTIGUOUS_ID: Dict[int, int] = {
    int(l.id): int(l.trainId) for l in _EVAL_LABELS if not l.hasInstances}
THING_TRAIN_IDS: Tuple[int, ...] = tuple(sorted(THING_DATASET_ID_TO_CONTIGUOUS_ID.values()))
assert THING_TRAIN_IDS == tuple(range(11, 19)), "Cityscapes' thing classes changed"


def cityscapes_panoptic_metadata(**extra) -> Dict:
    """The semantic metadata (19 classes, colours, ignore 255) plus Detectron2's Cityscapes
    panoptic entries: ``thing_classes``/``thing_colors`` (the same 19 names and colours, as
    Detectron2's ``cityscapes_fine_panoptic_*``), the category id maps, ``label_divisor`` and
    ``evaluator_type="cityscapes_panoptic_seg"``; then ``extra``."""
    meta = cityscapes_sem_seg_metadata(
        thing_classes=list(STUFF_CLASSES), thing_colors=list(STUFF_COLORS),
        thing_dataset_id_to_contiguous_id=dict(THING_DATASET_ID_TO_CONTIGUOUS_ID),
        stuff_dataset_id_to_contiguous_id=dict(STUFF_DATASET_ID_TO_CONTIGUOUS_ID),
        label_divisor=LABEL_DIVISOR, ignore_label=IGNORE_LABEL,
        evaluator_type=PANOPTIC_EVALUATOR_TYPE)
    meta.update(extra)
    return meta
