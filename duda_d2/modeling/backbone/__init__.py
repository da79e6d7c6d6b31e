from .dilated_resnet import build_dilated_resnet_backbone  # noqa: F401
from .mit import MIT_SPECS, MixVisionTransformer, build_mit_backbone  # noqa: F401
from .timm_backbone import TimmBackbone, build_timm_backbone  # noqa: F401
