"""Dataset registration: importing this package registers every dataset of the project."""
from .cityscapes_classes import cityscapes_sem_seg_metadata  # noqa: F401
from .paths import DatasetNotFoundError, dataset_root  # noqa: F401
from .register_synthetic import register_synthetic

register_synthetic()

from .register_sources import register_sources  # noqa: E402

register_sources()

from .register_cityscapes import register_cityscapes  # noqa: E402
from .register_adverse import register_adverse  # noqa: E402

register_cityscapes()
register_adverse()
