from .mit import MIT_SPECS, MixVisionTransformer, build_mit_backbone  # noqa: F401
