"""Mapping a panoptic record to the model's input: image, ``pan_seg`` and ``sem_seg``.

A panoptic record (``duda_d2.data.datasets.panoptic_registration``) names an RGB panoptic PNG
(``pan_seg_file_name``, id = R + 256 G + 256² B, panopticapi's ``rgb2id``) and lists its
segments (``segments_info``: id, contiguous ``category_id``, ``iscrowd``). The model's label
map is ``pan_seg`` (H, W) int64 with ``id = train_id * label_divisor + instance``:

- a thing segment (``category_id`` among the thing train ids, not crowd) gets an instance
  number ``1, 2, ...``, unique within the image, in increasing segment-id order;
- stuff segments and crowd segments get instance 0 (crowd keeps its class for the semantic
  loss but gets no centre or offset target);
- pixels of no segment (id 0: unlabelled) get ``ignore_label * label_divisor``.

``sem_seg`` is ``pan_seg // label_divisor`` (255 where unlabelled). The geometric augmentations
(resize, random crop with the rare-class re-draws and the category-area constraint, flip) are
drawn on the image and the semantic map exactly as ``SemSegDatasetMapper`` draws them, and the
same transforms are applied to the RGB panoptic PNG: it is uint8 RGB, so a resize goes through
the very same PIL nearest-neighbour path as the semantic map, and the ids are decoded only
after the crop (numbering the instances that remain).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils

from .datasets.panoptic_classes import LABEL_DIVISOR, THING_TRAIN_IDS
from .mappers import SemSegDatasetMapper

__all__ = ["PanopticDatasetMapper", "panoptic_train_ids", "encode_panoptic", "PAN_SEG"]

PAN_SEG = "pan_seg"


def _rgb2id(rgb: np.ndarray) -> np.ndarray:
    from panopticapi.utils import rgb2id  # imported on use: only panoptic data needs it

    return np.asarray(rgb2id(rgb), np.int64)


SegmentClass = Optional[Tuple[int, bool]]  # (train id, is an instance); None: unlabelled


def _segment_classes(ids: np.ndarray, segments_info: Sequence[Dict], thing_ids: Sequence[int],
                     source: str) -> Tuple[np.ndarray, np.ndarray, List[SegmentClass]]:
    """The distinct ids of ``ids`` (ascending), the inverse index of every pixel, and for each
    distinct id (class, is an instance) or None for 0 (unlabelled). An id that no segment lists
    is an error naming ``source``."""
    unique, inverse = np.unique(ids, return_inverse=True)
    table = {int(s["id"]): s for s in segments_info}
    things = set(int(t) for t in thing_ids)
    classes: List[SegmentClass] = []
    for value in unique.tolist():
        if value == 0:
            classes.append(None)
            continue
        segment = table.get(value)
        if segment is None:
            raise ValueError(f"panoptic PNG {source} holds id {value}, which its segments_info "
                             f"does not list (ids {sorted(table)}): the PNG and the panoptic "
                             f"JSON disagree; re-run the dataset's prepare script")
        category = int(segment["category_id"])
        classes.append((category, category in things and not segment.get("iscrowd", 0)))
    return unique, inverse.reshape(ids.shape), classes


def panoptic_train_ids(ids: np.ndarray, segments_info: Sequence[Dict], ignore_label: int = 255,
                       source: str = "") -> np.ndarray:
    """(H, W) uint8 train ids of a panoptic id map: each segment's ``category_id``,
    ``ignore_label`` where the id is 0."""
    _, inverse, classes = _segment_classes(ids, segments_info, (), source)
    values = np.array([ignore_label if c is None else c[0] for c in classes], np.uint8)
    return values[inverse]


def encode_panoptic(ids: np.ndarray, segments_info: Sequence[Dict],
                    thing_ids: Sequence[int] = THING_TRAIN_IDS,
                    label_divisor: int = LABEL_DIVISOR, ignore_label: int = 255,
                    source: str = "") -> np.ndarray:
    """The model's (H, W) int64 label map of a panoptic id map (module docstring): things
    ``train_id * divisor + k`` with k = 1, 2, ... in increasing id order, stuff and crowd
    ``train_id * divisor``, unlabelled ``ignore_label * divisor``."""
    _, inverse, classes = _segment_classes(ids, segments_info, thing_ids, source)
    values, instance = np.empty(len(classes), np.int64), 0
    for i, segment in enumerate(classes):
        if segment is None:
            values[i] = ignore_label * label_divisor
            continue
        category, is_instance = segment
        instance += is_instance
        if instance >= label_divisor:
            raise ValueError(f"{source} has more thing instances than the label divisor "
                             f"{label_divisor} can number")
        values[i] = category * label_divisor + (instance if is_instance else 0)
    return values[inverse]


class PanopticDatasetMapper(SemSegDatasetMapper):
    """Map a panoptic record to ``image``, ``pan_seg`` and ``sem_seg`` (module docstring), plus
    ``height``/``width`` of the original file; without labels (``with_labels=False``: target
    images) it maps like ``SemSegDatasetMapper`` (image only). The mapped record drops
    ``segments_info``: its ids no longer describe the augmented ``pan_seg`` (and a target
    image's segments are labels)."""

    @configurable
    def __init__(self, *, thing_ids: Sequence[int] = THING_TRAIN_IDS,
                 label_divisor: int = LABEL_DIVISOR, **kwargs):
        super().__init__(**kwargs)
        self.thing_ids = tuple(int(t) for t in thing_ids)
        self.label_divisor = label_divisor

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, size: Optional[Sequence[int]] = None,
                    with_labels: bool = True, thing_ids: Optional[Sequence[int]] = None,
                    label_divisor: int = LABEL_DIVISOR) -> dict:
        """``thing_ids``: the thing train ids (default: Cityscapes' 11..18)."""
        args = super().from_config(cfg, is_train=is_train, size=size, with_labels=with_labels)
        args.update(thing_ids=tuple(THING_TRAIN_IDS if thing_ids is None else thing_ids),
                    label_divisor=label_divisor)
        return args

    def __call__(self, dataset_dict: dict, rare_class: Optional[int] = None) -> dict:
        if not self.with_labels:  # target images: no label of any kind reaches the model
            record = super().__call__(dataset_dict, rare_class)
            record.pop("segments_info", None)
            return record
        if "pan_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"record of '{dataset_dict.get('file_name')}' has no panoptic label "
                f"(pan_seg_file_name): MODEL.TASK 'panoptic' trains on panoptic data sets "
                f"(*_panoptic, cityscapes_fine_panoptic_*; datasets/README.md)")
        record = copy.deepcopy(dataset_dict)
        segments = record.pop("segments_info", [])
        image = utils.read_image(record["file_name"], format=self.image_format)
        record["height"], record["width"] = image.shape[:2]
        source = f"'{record['pan_seg_file_name']}'"
        pan_rgb = utils.read_image(record["pan_seg_file_name"], format="RGB")
        if pan_rgb.shape[:2] != image.shape[:2]:
            raise ValueError(f"panoptic PNG {source} is {pan_rgb.shape[:2]} but image "
                             f"'{record['file_name']}' is {image.shape[:2]}")
        bad = [s["category_id"] for s in segments
               if not 0 <= int(s["category_id"]) < self.num_classes]
        if bad:
            raise ValueError(f"segments of {source} have categories {sorted(set(bad))} outside "
                             f"the train ids 0..{self.num_classes - 1}")
        sem_seg = panoptic_train_ids(_rgb2id(pan_rgb), segments, self.ignore_label, source)
        aug_input, transforms = self._augment(image, sem_seg, rare_class)
        pan_seg = encode_panoptic(_rgb2id(transforms.apply_segmentation(pan_rgb)), segments,
                                  self.thing_ids, self.label_divisor, self.ignore_label, source)
        if not np.array_equal(pan_seg // self.label_divisor, aug_input.sem_seg):
            raise RuntimeError(f"the augmented panoptic map of {source} no longer matches its "
                               f"semantic map: a transform treats them differently")
        record["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        record[PAN_SEG] = torch.as_tensor(pan_seg)
        record["sem_seg"] = torch.as_tensor(pan_seg // self.label_divisor)
        return record
