#!/usr/bin/env python3
"""Convert the SYNTHIA-RAND-CITYSCAPES labels to Cityscapes train ids and compute the
rare-class statistics; with ``--panoptic`` also write its panoptic ground truth.

    python datasets/prepare_synthia.py [--root DIR] [--nproc N] [--panoptic]

Expects the extracted download under ``<root>/synthia`` (root: --root, else
$DETECTRON2_DATASETS, else ./datasets)::

    synthia/RGB/0000000.png ...         9400 RGB frames
    synthia/GT/LABELS/0000000.png ...   16-bit PNGs; channel R holds the SYNTHIA class id,
                                        channel G the instance id (B is not used)

and writes ``synthia/GT/LABELS/0000000_labelTrainIds.png`` (uint8 Cityscapes train ids,
255 = ignore) for every frame, plus ``synthia/rcs_stats.json`` (pixels per class per label
file). Only the 16 classes SYNTHIA shares with Cityscapes are kept (no terrain, truck, train).
Resumable: converted files are skipped (only read again for the statistics) and every file is
written atomically.

``--panoptic`` (``synthia_panoptic_train``) then writes, in cityscapesscripts' createPanopticImgs
format (category ids = Cityscapes label ids)::

    synthia/GT/synthia_panoptic/0000000_panoptic.png   RGB panoptic ids
    synthia/GT/synthia_panoptic.json                   segments of every image

Instances are read as EDAPS (Saha et al., ICCV 2023) reads them: within a thing class (person,
rider, car, bus, motorcycle, bicycle) every distinct G value is one instance (the same value in
two classes: two instances); stuff classes are single segments and classes outside the 16 are
unlabelled. Unlike EDAPS, thing pixels with instance id 0 are a crowd region (class kept, no
instance) rather than one more instance.
"""
from __future__ import annotations

import sys
import warnings
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.layout import DatasetNotFoundError  # noqa: E402
from duda_d2.data.datasets.panoptic_datasets import panoptic_split  # noqa: E402
from duda_d2.data.datasets.project_datasets import SYNTHIA  # noqa: E402
from duda_d2.prep.command_line import (  # noqa: E402
    prepare_argument_parser, replaced_note, run_prepare_cli)
from duda_d2.prep.label_conversion import (  # noqa: E402
    LabelFormatError, apply_lut, convert_source_labels, id_to_train_id_lut)
from duda_d2.prep.panoptic_conversion import (  # noqa: E402
    PanopticSummary, write_panoptic_ground_truth)
from duda_d2.prep.panoptic_format import panoptic_id_map  # noqa: E402

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
# OpenCV returns the channels in B, G, R(, A) order: the class id is in R, the instance id in G.
_RED, _GREEN = 2, 1
PANOPTIC_SPLIT = panoptic_split("synthia_panoptic_train")


def _read_label(path: str) -> np.ndarray:
    """A SYNTHIA label file at full (16-bit) depth, channels B, G, R(, A).

    PIL cannot read these multi-channel 16-bit PNGs, so OpenCV is used. A file that is not a
    colour PNG raises ``LabelFormatError``.
    """
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 3 or label.shape[2] not in (3, 4):
        shape = None if label is None else label.shape
        raise LabelFormatError(
            f"SYNTHIA label '{path}' is unreadable or not a 3/4-channel PNG (shape {shape}); "
            f"expected the GT/LABELS file of the download, class id in the R channel.")
    return label


def read_class_ids(path: str) -> np.ndarray:
    """The SYNTHIA class ids of a label file: its R channel (index 2 in OpenCV's order)."""
    return _read_label(path)[:, :, _RED]


def read_instance_ids(path: str) -> np.ndarray:
    """The SYNTHIA instance ids of a label file: its G channel."""
    return _read_label(path)[:, :, _GREEN]


def synthia_train_ids(path: str) -> np.ndarray:
    """Train ids (uint8, 255 = ignore) of a SYNTHIA label file; unshared classes are ignored."""
    return apply_lut(read_class_ids(path), LUT)


def synthia_panoptic_ids(path: str) -> np.ndarray:
    """Cityscapes panoptic ids (``panoptic_format.panoptic_id_map``) of a SYNTHIA label file."""
    label = _read_label(path)
    return panoptic_id_map(apply_lut(label[:, :, _RED], LUT), label[:, :, _GREEN])


def prepare_synthia(root: Optional[str] = None, nproc: int = 1, progress: bool = True):
    """Convert ``<root>/synthia`` (default root: $DETECTRON2_DATASETS); a ``ConversionSummary``."""
    return convert_source_labels(SYNTHIA, synthia_train_ids, root, nproc, progress)


def prepare_synthia_panoptic(root: Optional[str] = None, nproc: int = 1,
                             progress: bool = True) -> PanopticSummary:
    """Write the panoptic PNGs and JSON of ``synthia_panoptic_train`` (after
    ``prepare_synthia``, which checks the download)."""
    return write_panoptic_ground_truth(PANOPTIC_SPLIT, synthia_panoptic_ids, root, nproc,
                                       progress)


def _prepare(args) -> Tuple:
    summary = prepare_synthia(args.root, args.nproc)
    return summary, (prepare_synthia_panoptic(args.root, args.nproc) if args.panoptic else None)


def _summary(args, result: Tuple) -> str:
    s, pan = result
    text = (f"{SYNTHIA.folder}: {s.images} label files, {s.converted} converted"
            f"{replaced_note(s.replaced)}, {s.skipped} already converted; statistics in "
            f"{s.stats_path}")
    if pan is not None:
        text += (f"\n{SYNTHIA.folder} panoptic: {pan.converted} PNGs written"
                 f"{replaced_note(pan.replaced)}, {pan.skipped} already there; {pan.json_path}")
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on a missing or malformed dataset)."""
    parser = prepare_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--panoptic", action="store_true",
                        help="also write the panoptic ground truth (synthia_panoptic_train)")
    return run_prepare_cli(parser, argv, _prepare, _summary,
                           (DatasetNotFoundError, LabelFormatError))


if __name__ == "__main__":
    sys.exit(main())
