"""Small builders shared by the tests (configs, tiny models)."""
from __future__ import annotations

import os

from detectron2.config import get_cfg

from duda_d2 import add_duda_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(path: str = "configs/baselines/source_only_synthetic.yaml", *opts):
    """A config built like tools/train_net.py builds it, from a repository-relative path."""
    cfg = get_cfg()
    add_duda_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    cfg.merge_from_list(list(opts))
    return cfg
