"""Computing and writing the rare-class-sampling statistics of a dataset (the file format and
its reading at training time: ``duda_d2.data.rcs_stats_file``)."""
from __future__ import annotations

import json
import os
from typing import Dict, Mapping

import numpy as np

from ..data.rcs_stats_file import RCS_STATS_FILE, RCS_STATS_VERSION
from ..utils.atomic_files import atomic_write_bytes

__all__ = ["class_pixel_counts", "save_rcs_stats"]


def class_pixel_counts(label: np.ndarray, num_classes: int = 19) -> Dict[str, int]:
    """Pixels of each train id present in ``label`` ({"class id": count}, ignore excluded)."""
    counts = np.bincount(label[label < num_classes].ravel(), minlength=num_classes)
    return {str(c): int(n) for c, n in enumerate(counts) if n > 0}


def save_rcs_stats(dataset_dir: str, pixels_per_image: Mapping[str, Mapping[str, int]],
                   num_classes: int = 19) -> str:
    """Write ``{label file relative to dataset_dir: {class: pixels}}`` as the RCS statistics."""
    path = os.path.join(dataset_dir, RCS_STATS_FILE)
    payload = {"version": RCS_STATS_VERSION, "num_classes": num_classes,
               "images": {k: dict(v) for k, v in sorted(pixels_per_image.items())}}
    atomic_write_bytes(path, json.dumps(payload).encode())
    return path
