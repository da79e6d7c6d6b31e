"""Dataset registration: importing this package registers every dataset of the project, semantic
and panoptic (lazily: nothing is read until a dataset is used)."""
from .cityscapes_classes import cityscapes_sem_seg_metadata  # noqa: F401
from .layout import (DatasetFileError, DatasetLayout, DatasetNotFoundError,  # noqa: F401
                     SplitLayout, dataset_root)
from .panoptic_registration import register_panoptic_datasets
from .registration import register_datasets

register_datasets()
register_panoptic_datasets()
