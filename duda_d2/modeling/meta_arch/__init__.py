from .segmentor import UDASegmentor  # noqa: F401
from .self_training import SelfTrainingUDA  # noqa: F401
from .duda import DUDA  # noqa: F401
