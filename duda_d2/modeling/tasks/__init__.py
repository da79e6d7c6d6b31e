"""Tasks: what a network outputs, its targets, losses, pseudo-targets, mixing, distillation and
post-processing. The meta-architectures are task-agnostic and hold one task."""
from .batches import DenseTargets, MixedBatch, UDABatch  # noqa: F401
from .semantic import PseudoLabelSettings, SemanticTask  # noqa: F401


def build_task(cfg) -> SemanticTask:
    """The task a config trains (semantic segmentation; panoptic will be chosen here)."""
    return SemanticTask(num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
