"""Small builders shared by the tests (configs, tiny models)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

from duda_d2 import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(path: str = "configs/synthetic/source_only.yaml", *opts):
    """A config built like tools/train_net.py builds it, from a repository-relative path."""
    return load_config(os.path.join(REPO, path), opts)


def load_dataset_script(name: str):
    """Import ``datasets/<name>.py`` (not a package) as module ``name``, registered in
    ``sys.modules`` so that worker processes can unpickle its functions."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(REPO, "datasets", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@contextlib.contextmanager
def dataset_root(root: str):
    """``$DETECTRON2_DATASETS`` set to ``root`` for the duration, restored afterwards."""
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = root
    try:
        yield root
    finally:
        if old is None:
            del os.environ["DETECTRON2_DATASETS"]
        else:
            os.environ["DETECTRON2_DATASETS"] = old
