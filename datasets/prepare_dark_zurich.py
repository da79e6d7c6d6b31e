#!/usr/bin/env python3
"""Check the Dark Zurich layout and labels and index them in ``<root>/dark_zurich/index.json``.

    python datasets/prepare_dark_zurich.py [--root DIR] [--nproc N]

Dark Zurich ships Cityscapes train-id labels, so nothing is converted. Expected under
``<root>/dark_zurich`` (``Dark_Zurich_train_anon.zip`` and ``Dark_Zurich_val_anon.zip``
extracted)::

    rgb_anon/train/night/<seq>/<name>_rgb_anon.png        unlabelled (dark_zurich_train)
    rgb_anon/val/night/<seq>/<name>_rgb_anon.png          labelled (dark_zurich_val)
    gt/val/night/<seq>/<name>_gt_labelTrainIds.png

``rgb_anon/train/{day,twilight}`` may exist and are not used. Every val image must have its
label, every label values in 0..18 or 255 and the image's size. The index lists, per registered
split, the image and label paths relative to ``<root>/dark_zurich`` and their counts; it is
written atomically.
"""
from __future__ import annotations

import sys
import warnings
from typing import Dict, Optional, Sequence

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.project_datasets import DARK_ZURICH  # noqa: E402
from duda_d2.prep.adverse_weather_index import check_and_index, index_cli  # noqa: E402


def prepare_dark_zurich(root: Optional[str] = None, nproc: int = 1,
                        progress: bool = True) -> Dict:
    """Check ``<root>/dark_zurich`` and write its ``index.json``; returns the index."""
    return check_and_index(DARK_ZURICH, root, nproc, progress)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return index_cli(DARK_ZURICH, argv)


if __name__ == "__main__":
    sys.exit(main())
