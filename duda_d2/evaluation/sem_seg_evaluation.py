"""Semantic-segmentation evaluation: Detectron2's ``SemSegEvaluator`` with this plugin's label
loader, a confusion matrix only (no per-image predictions kept in memory) and the extra class
subsets a benchmark asks for (SYNTHIA: mIoU over 16 and 13 classes).
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from functools import partial
from typing import Dict, List, Optional

import numpy as np

from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.file_io import PathManager

from ..data.labels import load_label_map
from .class_subsets import dataset_class_subsets, subset_mean

__all__ = ["UDASemSegEvaluator", "subset_miou"]


def subset_miou(class_ious: Dict[str, float], class_names: List[str],
                class_ids: List[int]) -> float:
    """Mean of the per-class IoUs of ``class_ids`` (classes absent from the ground truth, NaN,
    are skipped as in the full mIoU)."""
    return subset_mean(class_ious, "IoU", class_names, class_ids)


class UDASemSegEvaluator(SemSegEvaluator):
    """mIoU, per-class IoU and accuracy; plus ``mIoU<k>`` for each subset in the dataset's
    metadata ``eval_class_subsets`` (e.g. ``{"mIoU16": [...], "mIoU13": [...]}``).

    Detectron2's snapshot loads labels with ``np.array(copy=False)``, which numpy 2 rejects,
    so labels are read by ``load_label_map`` (which also checks their values). Boundary IoU and
    the per-image RLE predictions of the parent class are left out: they cost time and memory
    that grow with the dataset, and UDA benchmarks report mIoU only.
    """

    def __init__(self, dataset_name: str, distributed: bool = True,
                 output_dir: Optional[str] = None,
                 class_subsets: Optional[Dict[str, List[int]]] = None):
        """``class_subsets`` adds subsets to those of the dataset's own metadata (a SYNTHIA-
        trained model is scored on Cityscapes with SYNTHIA's 16 and 13 classes)."""
        meta = MetadataCatalog.get(dataset_name)
        loader = partial(_load_gt, num_classes=len(meta.stuff_classes),
                         ignore_label=meta.ignore_label)
        super().__init__(dataset_name, distributed, output_dir=None, sem_seg_loading_fn=loader)
        self._compute_boundary_iou = False
        self._results_dir = output_dir
        self._class_subsets = dataset_class_subsets(meta, class_subsets)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if out["sem_seg"].shape[0] != self._num_classes:
                raise ValueError(
                    f"the model predicts {out['sem_seg'].shape[0]} classes but "
                    f"{self._dataset_name} has {self._num_classes}: evaluate on a dataset of "
                    f"the model's classes, or set MODEL.SEM_SEG_HEAD.NUM_CLASSES to the one the "
                    f"checkpoint was trained with")
            pred = out["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)
            gt = self.sem_seg_loading_fn(self.input_file_to_gt_file[inp["file_name"]])
            if gt.shape != pred.shape:
                raise ValueError(f"prediction {pred.shape} and label {gt.shape} of "
                                 f"'{inp['file_name']}' differ in size")
            gt[gt == self._ignore_label] = self._num_classes
            self._conf_matrix += np.bincount(
                (self._num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                minlength=self._conf_matrix.size,
            ).reshape(self._conf_matrix.shape)

    def evaluate(self):
        results = super().evaluate()
        if results is None:  # not the main process
            return None
        metrics = results["sem_seg"]
        for name, class_ids in self._class_subsets.items():
            metrics[name] = subset_miou(metrics, self._class_names, class_ids)
        if self._results_dir:
            PathManager.mkdirs(self._results_dir)
            path = os.path.join(self._results_dir, "sem_seg_evaluation.json")
            with PathManager.open(path, "w") as f:
                json.dump(metrics, f, indent=1)
        return OrderedDict({"sem_seg": metrics})


def _load_gt(path: str, num_classes: int, ignore_label: int) -> np.ndarray:
    return load_label_map(path, num_classes, ignore_label, dtype=np.int64)
