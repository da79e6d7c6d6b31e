"""Where datasets live, and the error a user sees when one is missing."""
from __future__ import annotations

import os

__all__ = ["DatasetNotFoundError", "dataset_root", "require_folder"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or incomplete; the message says how to create it."""


def dataset_root() -> str:
    """``$DETECTRON2_DATASETS`` (Detectron2's convention), else ``./datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def require_folder(path: str, prepare_script: str, what: str = "dataset folder") -> str:
    """Return ``path`` if it is a folder, else raise an error naming the fix."""
    if not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"{what} '{os.path.abspath(path)}' does not exist. Datasets are read from "
            f"$DETECTRON2_DATASETS (now: '{os.path.abspath(dataset_root())}'); set it to the "
            f"folder that holds your datasets, or create this one with "
            f"`.venv/bin/python {prepare_script}` (see datasets/README.md).")
    return path
