from .checkpoint import AtomicCheckpointer  # noqa: F401
from .train_step import UDATrainStep  # noqa: F401
from .trainer import UDATrainer  # noqa: F401
