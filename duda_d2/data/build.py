"""Train and test data loaders built from the config."""
from __future__ import annotations

from detectron2.data import build_detection_test_loader

from .loader import build_supervised_train_loader, build_uda_train_loader  # noqa: F401
from .mappers import SemSegDatasetMapper

__all__ = ["build_supervised_train_loader", "build_uda_train_loader", "build_sem_seg_test_loader"]


def build_sem_seg_test_loader(cfg, dataset_name: str):
    """Batches of one image, resized to ``INPUT.TEST_SIZE``, labels left to the evaluator.

    The same for both tasks (``MODEL.TASK``): the semantic and panoptic evaluators read the
    ground truth from the records' files at their original size (``sem_seg_file_name``;
    ``panoptic_json``/``panoptic_root``), so the test mapper loads no label."""
    mapper = SemSegDatasetMapper(cfg, is_train=False, with_labels=False)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
