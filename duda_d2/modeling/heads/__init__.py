from .daformer import DAFormerHead  # noqa: F401
from .deeplabv2 import DeepLabV2Head  # noqa: F401
from .segformer import SegFormerHead  # noqa: F401
from .instance import DAFormerInsEmbedHead, LightInsEmbedHead  # noqa: F401
