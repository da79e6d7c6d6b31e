#!/usr/bin/env python3
"""Check the ACDC layout and labels and index them in ``<root>/acdc/index.json``.

    python datasets/prepare_acdc.py [--root DIR] [--nproc N]

ACDC ships Cityscapes train-id labels, so nothing is converted. Expected under ``<root>/acdc``
(``rgb_anon_trainvaltest.zip`` and ``gt_trainval.zip`` extracted)::

    rgb_anon/{fog,night,rain,snow}/{train,val}/<GOPRxxxx>/<name>_rgb_anon.png
    gt/{fog,night,rain,snow}/{train,val}/<GOPRxxxx>/<name>_gt_labelTrainIds.png

Every image must have its label, every label values in 0..18 or 255 and the image's size. The
index lists, per registered split (``acdc_train``, ``acdc_val``), the image and label paths
relative to ``<root>/acdc`` and their counts; it is written atomically.
"""
from __future__ import annotations

import sys
import warnings
from typing import Dict, Optional, Sequence

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.project_datasets import ACDC  # noqa: E402
from duda_d2.prep.adverse_weather_index import check_and_index, index_cli  # noqa: E402


def prepare_acdc(root: Optional[str] = None, nproc: int = 1, progress: bool = True) -> Dict:
    """Check ``<root>/acdc`` and write its ``index.json``; returns the index."""
    return check_and_index(ACDC, root, nproc, progress)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return index_cli(ACDC, argv)


if __name__ == "__main__":
    sys.exit(main())
