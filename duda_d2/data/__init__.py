"""Datasets, mappers and loaders."""
from . import datasets  # noqa: F401  (registers the datasets)
from .build import (build_sem_seg_test_loader, build_supervised_train_loader,  # noqa: F401
                    build_uda_train_loader)
from .labels import InvalidLabelError, load_label_map  # noqa: F401
from .mappers import SemSegDatasetMapper  # noqa: F401
from .panoptic_mapper import PanopticDatasetMapper  # noqa: F401
