#!/usr/bin/env python3
"""Convert the GTA5 labels to Cityscapes train ids and compute the rare-class statistics.

    python datasets/prepare_gta5.py [--root DIR] [--nproc N]

Expects the extracted GTA5 download under ``<root>/gta5`` (root: --root, else
$DETECTRON2_DATASETS, else ./datasets)::

    gta5/images/00001.png ...   24966 RGB frames
    gta5/labels/00001.png ...   palette PNGs whose palette *indices* are Cityscapes label ids

and writes ``gta5/labels/00001_labelTrainIds.png`` (uint8 train ids, 255 = ignore) for every
frame, plus ``gta5/rcs_stats.json`` (pixels per class per label file). Resumable: converted
files are skipped (only read again for the statistics) and every file is written atomically.
"""
from __future__ import annotations

import sys
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from PIL import Image

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.project_datasets import GTA5  # noqa: E402
from duda_d2.prep.label_conversion import (  # noqa: E402
    LabelFormatError, apply_lut, convert_source_labels, convert_source_labels_cli,
    id_to_train_id_lut)

# Cityscapes label id -> train id, from cityscapesscripts' table (trainId 255 / -1: ignored).
LABEL_ID_TO_TRAIN_ID: Dict[int, int] = {
    l.id: l.trainId for l in CITYSCAPES_LABELS if l.id >= 0 and 0 <= l.trainId < 255}
LUT = id_to_train_id_lut(LABEL_ID_TO_TRAIN_ID)


def read_label_ids(path: str) -> np.ndarray:
    """The Cityscapes label ids of a GTA5 label file: the palette indices, not the colours.

    GTA5 labels are palette ("P") PNGs; a grayscale ("L") file holding the ids is accepted too.
    Anything else (e.g. an RGB colour mask) raises ``LabelFormatError`` naming the file.
    """
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise LabelFormatError(
                f"GTA5 label '{path}' has PIL mode '{image.mode}'; expected a palette ('P') or "
                f"grayscale ('L') PNG of Cityscapes label ids, as in the GTA5 download. "
                f"Replace it with the original file from the labels archive.")
        return np.asarray(image)


def gta5_train_ids(path: str) -> np.ndarray:
    """Train ids (uint8, 255 = ignore) of a GTA5 label file; unknown ids (> 33) are ignored."""
    return apply_lut(read_label_ids(path), LUT)


def prepare_gta5(root: Optional[str] = None, nproc: int = 1, progress: bool = True):
    """Convert ``<root>/gta5`` (default root: $DETECTRON2_DATASETS); a ``ConversionSummary``."""
    return convert_source_labels(GTA5, gta5_train_ids, root, nproc, progress)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on a missing or malformed dataset)."""
    return convert_source_labels_cli(GTA5, gta5_train_ids, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
