"""Backbones, heads and meta-architectures, registered with Detectron2 on import."""
from . import backbone, heads, meta_arch  # noqa: F401
from .network import SegmentationNetwork, build_segmentation_network  # noqa: F401
