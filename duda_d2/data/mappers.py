"""Dataset mappers: read an image (and its label map), apply geometric augmentations."""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .labels import load_label_map

__all__ = ["SemSegDatasetMapper", "build_train_augmentations", "build_test_augmentations",
           "RARE_CLASS_CROP_RETRIES"]

# MIC's UDADataset re-draws a rare-class image's crop at most this many times.
RARE_CLASS_CROP_RETRIES = 10


def _resize(size: Sequence[int]) -> List[T.Augmentation]:
    """A fixed (height, width) resize, or nothing for (0, 0)."""
    height, width = size
    return [T.Resize((height, width))] if height > 0 and width > 0 else []


def build_train_augmentations(cfg, size: Sequence[int], with_labels: bool = True
                              ) -> List[T.Augmentation]:
    """Resize to the domain's working ``size``, random crop, horizontal flip.

    With labels, the crop is re-drawn (up to 10 times) while one class covers more than
    ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` of it, as DAFormer's category-area constraint.
    """
    augs = _resize(size)
    if cfg.INPUT.CROP.ENABLED:
        crop_type, crop_size = cfg.INPUT.CROP.TYPE, tuple(cfg.INPUT.CROP.SIZE)
        max_area = cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA
        if with_labels and max_area < 1.0:
            augs.append(T.RandomCrop_CategoryAreaConstraint(
                crop_type, crop_size, max_area, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
        else:
            augs.append(T.RandomCrop(crop_type, crop_size))
    if cfg.INPUT.RANDOM_FLIP == "horizontal":
        augs.append(T.RandomFlip(horizontal=True, vertical=False))
    elif cfg.INPUT.RANDOM_FLIP == "vertical":
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    return augs


def build_test_augmentations(cfg) -> List[T.Augmentation]:
    return _resize(cfg.INPUT.TEST_SIZE)


class SemSegDatasetMapper:
    """Map a dataset record to the model's input dict.

    Output: ``image`` (C, H, W) uint8 tensor in ``INPUT.FORMAT``, ``sem_seg`` (H, W) long
    tensor when labels are used, and ``height``/``width`` of the *original* file so that
    predictions are returned at the label's resolution.
    """

    @configurable
    def __init__(self, *, augmentations: List[T.Augmentation], image_format: str,
                 num_classes: int, ignore_label: int = 255, with_labels: bool = True,
                 rare_class_min_pixels: float = 0.0):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.with_labels = with_labels
        self.rare_class_min_pixels = rare_class_min_pixels

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, size: Optional[Sequence[int]] = None,
                    with_labels: bool = True) -> dict:
        """``size``: the domain's working (height, width); default ``INPUT.SOURCE_SIZE``."""
        size = cfg.INPUT.SOURCE_SIZE if size is None else size
        augs = (build_train_augmentations(cfg, size, with_labels) if is_train
                else build_test_augmentations(cfg))
        rcs = cfg.DATALOADER.RCS
        return {"augmentations": augs, "image_format": cfg.INPUT.FORMAT,
                "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                "with_labels": with_labels,
                "rare_class_min_pixels": (rcs.MIN_PIXELS * rcs.MIN_CROP_RATIO
                                          if rcs.ENABLED and is_train else 0.0)}

    def __call__(self, dataset_dict: dict, rare_class: Optional[int] = None) -> dict:
        """``rare_class``: the class rare class sampling drew this image for. As MIC's
        ``UDADataset``, the random augmentations (crop, flip) are re-drawn up to
        ``RARE_CLASS_CROP_RETRIES`` times until the crop holds more than
        ``rare_class_min_pixels`` pixels of it (the last draw is kept either way)."""
        record = copy.deepcopy(dataset_dict)
        image = utils.read_image(record["file_name"], format=self.image_format)
        record["height"], record["width"] = image.shape[:2]
        sem_seg = None
        if self.with_labels and "sem_seg_file_name" in record:
            sem_seg = load_label_map(record["sem_seg_file_name"], self.num_classes,
                                     self.ignore_label)
            if sem_seg.shape != image.shape[:2]:
                raise ValueError(f"label '{record['sem_seg_file_name']}' is {sem_seg.shape} but "
                                 f"image '{record['file_name']}' is {image.shape[:2]}")
        aug_input, _ = self._augment(image, sem_seg, rare_class)
        record["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        if sem_seg is not None:
            record["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return record

    def _augment(self, image: np.ndarray, sem_seg: Optional[np.ndarray],
                 rare_class: Optional[int]) -> Tuple[T.AugInput, T.TransformList]:
        """The augmented image and labels, and the transforms applied (for other label maps
        that must follow them, e.g. a panoptic map)."""
        retry = (rare_class is not None and sem_seg is not None
                 and self.rare_class_min_pixels > 0)
        for _ in range(1 + (RARE_CLASS_CROP_RETRIES if retry else 0)):
            aug_input = T.AugInput(image, sem_seg=sem_seg)
            transforms = self.augmentations(aug_input)
            if not retry or (aug_input.sem_seg == rare_class).sum() > self.rare_class_min_pixels:
                break
        return aug_input, transforms
