"""The 19 Cityscapes evaluation classes (train ids 0..18), from cityscapesscripts' label table."""
from __future__ import annotations

from typing import Dict, List, Tuple

from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

__all__ = ["IGNORE_LABEL", "NUM_CLASSES", "STUFF_CLASSES", "STUFF_COLORS",
           "SYNTHIA_16_CLASSES", "SYNTHIA_13_CLASSES", "cityscapes_sem_seg_metadata"]

IGNORE_LABEL = 255
_TRAIN_LABELS = sorted((l for l in _CITYSCAPES_LABELS if 0 <= l.trainId < IGNORE_LABEL),
                       key=lambda l: l.trainId)
STUFF_CLASSES: List[str] = [l.name for l in _TRAIN_LABELS]
STUFF_COLORS: List[Tuple[int, int, int]] = [tuple(l.color) for l in _TRAIN_LABELS]
NUM_CLASSES = len(STUFF_CLASSES)
assert NUM_CLASSES == 19, "cityscapesscripts' label table no longer has 19 train ids"

# SYNTHIA has no terrain, truck or train: its benchmark reports mIoU over 16 classes, and over
# 13 when wall, fence and pole are left out as well (the DAFormer/HRDA/MIC convention).
_ids = {name: i for i, name in enumerate(STUFF_CLASSES)}
SYNTHIA_16_CLASSES = [i for i in range(NUM_CLASSES)
                      if STUFF_CLASSES[i] not in ("terrain", "truck", "train")]
SYNTHIA_13_CLASSES = [i for i in SYNTHIA_16_CLASSES
                      if STUFF_CLASSES[i] not in ("wall", "fence", "pole")]


def cityscapes_sem_seg_metadata(**extra) -> Dict:
    """Metadata every dataset of this project carries (19 classes, colours, ignore 255)."""
    meta = {"stuff_classes": list(STUFF_CLASSES), "stuff_colors": list(STUFF_COLORS),
            "ignore_label": IGNORE_LABEL, "evaluator_type": "sem_seg"}
    meta.update(extra)
    return meta
