"""Dataset registration: importing this package registers every dataset of the project
(lazily: nothing is read until a dataset is used)."""
from .cityscapes_classes import cityscapes_sem_seg_metadata  # noqa: F401
from .paths import DatasetNotFoundError, dataset_root  # noqa: F401
from .register_adverse import register_adverse
from .register_cityscapes import register_cityscapes
from .register_sources import register_sources
from .register_synthetic import register_synthetic

register_synthetic()
register_sources()
register_cityscapes()
register_adverse()
