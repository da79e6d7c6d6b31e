"""Small builders shared by the tests (configs, tiny models)."""
from __future__ import annotations

import os

from duda_d2 import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(path: str = "configs/baselines/source_only_synthetic.yaml", *opts):
    """A config built like tools/train_net.py builds it, from a repository-relative path."""
    return load_config(os.path.join(REPO, path), opts)
