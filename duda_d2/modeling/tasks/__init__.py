"""Tasks: what a network outputs, its targets, losses, pseudo-targets, mixing, distillation and
post-processing. The meta-architectures are task-agnostic and hold one task."""
from typing import Union

from detectron2.data import MetadataCatalog

from .batches import DenseTargets, MixedBatch, UDABatch  # noqa: F401
from .panoptic import PanopticSettings, PanopticTask, panoptic_metadata_ids
from .semantic import PseudoLabelSettings, SemanticTask  # noqa: F401

Task = Union[SemanticTask, PanopticTask]


def panoptic_dataset_name(cfg) -> str:
    """The data set whose panoptic metadata (thing classes, label divisor) the task uses: the
    first labelled training set, else the first test set."""
    names = [*cfg.DATASETS.SOURCE_TRAIN, *cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    if not names:
        raise ValueError("MODEL.TASK 'panoptic' reads its thing classes from a panoptic data "
                         "set's metadata, but DATASETS.SOURCE_TRAIN, TRAIN and TEST are empty")
    return names[0]


def build_task(cfg) -> Task:
    """The task ``MODEL.TASK`` names: ``semantic`` or ``panoptic``."""
    from ...config import TASKS

    kind = cfg.MODEL.TASK
    head = cfg.MODEL.SEM_SEG_HEAD
    if kind == "semantic":
        return SemanticTask(num_classes=head.NUM_CLASSES, ignore_value=head.IGNORE_VALUE)
    if kind != "panoptic":
        raise ValueError(f"MODEL.TASK={kind!r} unknown; use one of {list(TASKS)}")
    name = panoptic_dataset_name(cfg)
    metadata = MetadataCatalog.get(name)
    if not hasattr(metadata, "label_divisor") or not hasattr(
            metadata, "thing_dataset_id_to_contiguous_id"):
        raise ValueError(f"MODEL.TASK 'panoptic' needs a panoptic data set, but '{name}' has no "
                         f"panoptic metadata (label_divisor, thing classes): use a *_panoptic "
                         f"data set, e.g. synthetic_uda_source_train_panoptic or "
                         f"cityscapes_fine_panoptic_train")
    thing_ids, divisor = panoptic_metadata_ids(metadata)
    return PanopticTask(num_classes=head.NUM_CLASSES, ignore_value=head.IGNORE_VALUE,
                        settings=PanopticSettings.from_config(cfg, thing_ids=thing_ids,
                                                              label_divisor=divisor))
