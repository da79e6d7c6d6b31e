"""duda_d2: Distilled Unsupervised Domain Adaptation (DUDA) as a Detectron2 plugin.

Importing the package registers its backbones, heads, meta-architectures and datasets with
Detectron2's registries; ``add_duda_config(cfg)`` adds its configuration keys.
"""
from . import data, modeling  # noqa: F401  (registration side effects)
from .config import add_duda_config, load_config  # noqa: F401

__version__ = "0.1.0"
