"""Reading train-id label maps, with a clear error for values outside the class table."""
from __future__ import annotations

import numpy as np
from PIL import Image

from detectron2.utils.file_io import PathManager

__all__ = ["InvalidLabelError", "load_label_map"]


class InvalidLabelError(ValueError):
    """A label file holds values that are neither a train id nor the ignore label."""


def load_label_map(path: str, num_classes: int = 19, ignore_label: int = 255,
                   dtype=np.uint8) -> np.ndarray:
    """Read a single-channel train-id PNG as an (H, W) array and check its values.

    Values must lie in ``[0, num_classes - 1]`` or equal ``ignore_label``; anything else (an
    unconverted label-id file, an RGB colour mask) raises ``InvalidLabelError`` naming the file.
    """
    with PathManager.open(path, "rb") as f:
        label = np.asarray(Image.open(f))
    if label.ndim != 2:
        raise InvalidLabelError(
            f"label file '{path}' has shape {label.shape}; expected a single-channel PNG of "
            f"train ids (0..{num_classes - 1}, {ignore_label} = ignore). Colour masks and "
            f"raw label ids must be converted by the dataset's prepare script first.")
    bad = (label >= num_classes) & (label != ignore_label)
    if bad.any():
        values = np.unique(label[bad])[:10].tolist()
        raise InvalidLabelError(
            f"label file '{path}' holds values {values} outside the train ids 0..{num_classes - 1}"
            f" and the ignore label {ignore_label}; convert it with the dataset's prepare script.")
    return label.astype(dtype, copy=False)
