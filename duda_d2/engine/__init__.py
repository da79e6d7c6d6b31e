from .checkpoint import AtomicCheckpointer  # noqa: F401
from .trainer import UDATrainer, wrap_ddp  # noqa: F401
