"""Writing panoptic ground truth in the Cityscapes/COCO panoptic format.

The format is the one cityscapesscripts' ``createPanopticImgs`` writes for Cityscapes, so that
its ``evaluatePanoptic``, panopticapi and Detectron2's Cityscapes panoptic loader read ours
unchanged:

- one RGB PNG per image whose pixel id is ``R + 256 G + 256² B`` (panopticapi's ``rgb2id``):
  ``label_id * 1000 + k`` for instance ``k`` (0, 1, ... per class) of a thing class,
  ``label_id`` for a stuff class and for thing pixels without an instance (a crowd region),
  0 for unlabelled pixels;
- one JSON per split: ``images`` (id, file_name, height, width), ``annotations`` (image_id,
  file_name of the PNG, ``segments_info``: id, category_id, iscrowd, area, bbox [x, y, w, h])
  and the 19 ``categories``, with Cityscapes label ids as category ids.

``panoptic_id_map`` builds the ids from a train-id label map and an instance-id map (the
synthetic renderer's, SYNTHIA's), ``segments_info`` lists the segments of an id map with
createPanopticImgs' rules.
"""
from __future__ import annotations

import json
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

from ..data.datasets.panoptic_classes import (LABEL_DIVISOR, PANOPTIC_CATEGORIES,
                                              THING_TRAIN_IDS, TRAIN_ID_TO_LABEL_ID)
from ..utils.atomic_files import atomic_write_bytes
from .png_files import write_png

__all__ = ["panoptic_id_map", "segments_info", "id_map_to_rgb", "read_id_map",
           "write_id_png", "panoptic_json_payload", "write_panoptic_json"]

_THING_LABEL_IDS = {TRAIN_ID_TO_LABEL_ID[t] for t in THING_TRAIN_IDS}


def panoptic_id_map(train_ids: np.ndarray, instance_ids: np.ndarray,
                    thing_train_ids: Sequence[int] = THING_TRAIN_IDS) -> np.ndarray:
    """Cityscapes panoptic ids (H, W) uint32 of a train-id map and an instance-id map.

    ``instance_ids``: any integers; on a thing class's pixels, each distinct non-zero value is
    one instance (the same value on two classes: two instances), numbered 0, 1, ... per class
    in increasing value (``label_id * 1000 + k``); 0 on a thing pixel means no instance (crowd:
    ``label_id``). Stuff pixels get their label id whatever their instance value; pixels
    whose train id is not one of the 19 (255) get 0 (unlabelled).
    """
    train_ids = np.asarray(train_ids)
    instance_ids = np.asarray(instance_ids).astype(np.int64)
    if train_ids.shape != instance_ids.shape:
        raise ValueError(f"train-id map {train_ids.shape} and instance map "
                         f"{instance_ids.shape} differ in size")
    lut = np.zeros(256, np.uint32)
    for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
        lut[train_id] = label_id
    label_ids = lut[train_ids.astype(np.uint8)]
    out = label_ids.copy()
    for train_id in thing_train_ids:
        member = (train_ids == train_id) & (instance_ids != 0)
        if not member.any():
            continue
        values, k = np.unique(instance_ids[member], return_inverse=True)
        if len(values) > LABEL_DIVISOR:
            raise ValueError(f"{len(values)} instances of train id {train_id} in one image: "
                             f"more than the label divisor {LABEL_DIVISOR} allows")
        out[member] = TRAIN_ID_TO_LABEL_ID[train_id] * LABEL_DIVISOR + k.astype(np.uint32)
    return out


def segments_info(id_map: np.ndarray) -> List[Dict]:
    """The ``segments_info`` of a panoptic id map, as createPanopticImgs makes it: one segment
    per non-zero id, in increasing id order; ``iscrowd`` 1 for an id below 1000 of a thing
    class; ``bbox`` [x, y, width, height] of the pixels; ``category_id`` the label id."""
    ids, inverse, areas = np.unique(id_map, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(id_map.shape)
    rows = np.arange(id_map.shape[0])
    cols = np.arange(id_map.shape[1])
    segments = []
    for index, (segment_id, area) in enumerate(zip(ids.tolist(), areas.tolist())):
        if segment_id == 0:
            continue
        label_id = segment_id // LABEL_DIVISOR if segment_id >= LABEL_DIVISOR else segment_id
        if label_id not in TRAIN_ID_TO_LABEL_ID.values():
            raise ValueError(f"panoptic id {segment_id} names label id {label_id}, which is not "
                             f"one of the 19 Cityscapes evaluation classes")
        mask = inverse == index
        ys, xs = rows[mask.any(axis=1)], cols[mask.any(axis=0)]
        crowd = int(segment_id < LABEL_DIVISOR and label_id in _THING_LABEL_IDS)
        segments.append({"id": int(segment_id), "category_id": int(label_id),
                         "iscrowd": crowd, "area": int(area),
                         "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1),
                                  int(ys[-1] - ys[0] + 1)]})
    return segments


def id_map_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a panoptic id map: R = id % 256, G = id // 256 % 256, ..."""
    ids = np.asarray(id_map, np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 ** 3:
        raise ValueError("panoptic ids must lie in [0, 256^3)")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_id_map(path: str) -> np.ndarray:
    """The panoptic ids (H, W) int64 of an RGB id PNG (panopticapi's ``rgb2id``)."""
    from panopticapi.utils import rgb2id

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read the panoptic PNG '{path}'")
    return rgb2id(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).astype(np.int64)


def write_id_png(path: str, id_map: np.ndarray) -> None:
    """Atomically write a panoptic id map as an RGB PNG."""
    write_png(path, id_map_to_rgb(id_map))


def panoptic_json_payload(images: Iterable[Dict], annotations: Iterable[Dict],
                          categories: Optional[List[Dict]] = None) -> Dict:
    """A panoptic JSON: ``images``, ``annotations`` and the 19 Cityscapes ``categories``."""
    return {"images": list(images), "annotations": list(annotations),
            "categories": list(PANOPTIC_CATEGORIES if categories is None else categories)}


def write_panoptic_json(path: str, images: Iterable[Dict], annotations: Iterable[Dict]) -> None:
    """Atomically write a panoptic JSON (keys sorted, as createPanopticImgs writes it)."""
    payload = panoptic_json_payload(images, annotations)
    atomic_write_bytes(path, (json.dumps(payload, sort_keys=True) + "\n").encode())
