#!/usr/bin/env python3
"""Convert the SYNTHIA-RAND-CITYSCAPES labels to Cityscapes train ids and compute the
rare-class statistics.

    python datasets/prepare_synthia.py [--root DIR] [--nproc N]

Expects the extracted download under ``<root>/synthia`` (root: --root, else
$DETECTRON2_DATASETS, else ./datasets)::

    synthia/RGB/0000000.png ...         9400 RGB frames
    synthia/GT/LABELS/0000000.png ...   16-bit PNGs; channel R holds the SYNTHIA class id (the
                                        other channels are not used)

and writes ``synthia/GT/LABELS/0000000_labelTrainIds.png`` (uint8 Cityscapes train ids,
255 = ignore) for every frame, plus ``synthia/rcs_stats.json`` (pixels per class per label
file). Only the 16 classes SYNTHIA shares with Cityscapes are kept (no terrain, truck, train).
Resumable: converted files are skipped (only read again for the statistics) and every file is
written atomically.
"""
from __future__ import annotations

import sys
import warnings
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.project_datasets import SYNTHIA  # noqa: E402
from duda_d2.prep.label_conversion import (  # noqa: E402
    LabelFormatError, apply_lut, convert_source_labels, convert_source_labels_cli,
    id_to_train_id_lut)

# SYNTHIA class id -> Cityscapes train id, for the 16 classes both datasets have.
SYNTHIA_ID_TO_TRAIN_ID: Dict[int, int] = {
    3: 0,    # road
    4: 1,    # sidewalk
    2: 2,    # building
    21: 3,   # wall
    5: 4,    # fence
    7: 5,    # pole
    15: 6,   # traffic light
    9: 7,    # traffic sign
    6: 8,    # vegetation
    1: 10,   # sky
    10: 11,  # person
    17: 12,  # rider
    8: 13,   # car
    19: 15,  # bus
    12: 17,  # motorcycle
    11: 18,  # bicycle
}
LUT = id_to_train_id_lut(SYNTHIA_ID_TO_TRAIN_ID)
_RED = 2  # OpenCV returns the channels in B, G, R(, A) order; the class id is in R


def read_class_ids(path: str) -> np.ndarray:
    """The SYNTHIA class ids of a label file: its R channel, read at full (16-bit) depth.

    PIL cannot read these multi-channel 16-bit PNGs, so OpenCV is used; it orders the channels
    B, G, R, hence index 2. A file that is not a colour PNG raises ``LabelFormatError``.
    """
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 3 or label.shape[2] not in (3, 4):
        shape = None if label is None else label.shape
        raise LabelFormatError(
            f"SYNTHIA label '{path}' is unreadable or not a 3/4-channel PNG (shape {shape}); "
            f"expected the GT/LABELS file of the download, class id in the R channel.")
    return label[:, :, _RED]


def synthia_train_ids(path: str) -> np.ndarray:
    """Train ids (uint8, 255 = ignore) of a SYNTHIA label file; unshared classes are ignored."""
    return apply_lut(read_class_ids(path), LUT)


def prepare_synthia(root: Optional[str] = None, nproc: int = 1, progress: bool = True):
    """Convert ``<root>/synthia`` (default root: $DETECTRON2_DATASETS); a ``ConversionSummary``."""
    return convert_source_labels(SYNTHIA, synthia_train_ids, root, nproc, progress)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on a missing or malformed dataset)."""
    return convert_source_labels_cli(SYNTHIA, synthia_train_ids, argv,
                                     __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
