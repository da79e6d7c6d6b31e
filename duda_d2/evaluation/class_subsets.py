"""Class subsets of a benchmark (SYNTHIA->Cityscapes: 16 and 13 of the 19 classes), shared by
the semantic and the panoptic evaluators.

A subset is named by its mIoU key (``"mIoU16": [train ids]``), as the training sets' metadata
``eval_class_subsets`` gives it; the panoptic evaluator reports the same subset as ``mPQ16``.
The mean over a subset skips classes whose value is NaN (absent from ground truth and
prediction), as the full mean does.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional

__all__ = ["dataset_class_subsets", "subset_mean", "subset_metric_name"]


def dataset_class_subsets(metadata, extra: Optional[Mapping[str, List[int]]] = None
                          ) -> Dict[str, List[int]]:
    """The subsets of ``metadata.eval_class_subsets`` plus ``extra`` (a SYNTHIA-trained model is
    scored on Cityscapes with SYNTHIA's subsets: the trainer passes the training sets')."""
    subsets = dict(getattr(metadata, "eval_class_subsets", {}) or {})
    subsets.update(extra or {})
    return subsets


def subset_metric_name(subset: str, metric: str) -> str:
    """``("mIoU16", "PQ") -> "mPQ16"``; a subset not named ``mIoU<suffix>`` gives
    ``"m<metric>-<subset>"``."""
    if subset.startswith("mIoU"):
        return f"m{metric}{subset[len('mIoU'):]}"
    return f"m{metric}-{subset}"


def subset_mean(metrics: Mapping[str, float], metric: str, class_names: List[str],
                class_ids: List[int]) -> float:
    """Mean of ``metrics[f"{metric}-{class name}"]`` over ``class_ids``, NaN values skipped
    (NaN when all are)."""
    values = [metrics[f"{metric}-{class_names[i]}"] for i in class_ids]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")
