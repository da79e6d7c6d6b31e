"""Meta-architectures, registered with Detectron2: the plain ``UDASegmentor``, the
``SelfTrainingUDA`` baseline (one ``MeanTeacherPair``) and ``DUDA`` (a large pair, the small
student and its ``SmallStudentDistillation``)."""
from .segmentor import UDASegmentor  # noqa: F401
from .self_training import SelfTrainingUDA  # noqa: F401
from .duda import DUDA  # noqa: F401
