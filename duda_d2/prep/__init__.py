"""Offline dataset preparation, used only by the ``datasets/prepare_*.py`` scripts: their shared
command line, a process pool with a progress bar, atomic PNG writing, label conversion to train
ids, panoptic ground truth in the Cityscapes/COCO panoptic format (``panoptic_format``,
``panoptic_conversion``), rare-class-sampling statistics, the adverse-weather (ACDC, Dark
Zurich) index and the synthetic benchmark's scene renderer.

``import duda_d2`` does not import this package: training only reads what it writes (dataset
layouts and registration: ``duda_d2.data.datasets``; RCS statistics:
``duda_d2.data.rcs_stats_file``).
"""
