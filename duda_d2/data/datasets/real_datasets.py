"""What the real-image datasets (Cityscapes, ACDC, Dark Zurich) share: where each is downloaded,
the error a user sees when one is missing or half-extracted, and catalog (re)registration.

The error names the missing path, the dataset root (``$DETECTRON2_DATASETS``) and the fix --
which archive to download from where, and which prepare script to run -- because "file not
found" alone does not tell a user whether to set a variable, extract a zip or run a script.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, NamedTuple, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .paths import DatasetNotFoundError, dataset_root

__all__ = ["Download", "CITYSCAPES", "ACDC", "DARK_ZURICH", "incomplete_dataset_error",
           "require_dir", "replace_dataset"]


class Download(NamedTuple):
    """A downloadable dataset: its name, folder under the dataset root, archives and script."""
    name: str
    folder: str
    url: str
    archives: Tuple[str, ...]
    prepare_script: str


CITYSCAPES = Download("Cityscapes", "cityscapes", "https://www.cityscapes-dataset.com/downloads/",
                      ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"),
                      "datasets/prepare_cityscapes.py")
ACDC = Download("ACDC", "acdc", "https://acdc.vision.ee.ethz.ch/",
                ("rgb_anon_trainvaltest.zip", "gt_trainval.zip"), "datasets/prepare_acdc.py")
DARK_ZURICH = Download("Dark Zurich", "dark_zurich",
                       "https://www.trace.ethz.ch/publications/2019/GCMA_UIoU/",
                       ("Dark_Zurich_train_anon.zip", "Dark_Zurich_val_anon.zip"),
                       "datasets/prepare_dark_zurich.py")


def _root_description(root: str) -> str:
    env = os.environ.get("DETECTRON2_DATASETS")
    env_text = f"'{env}'" if env is not None else "unset, i.e. ./datasets"
    return (f"Datasets are read from '{os.path.abspath(root)}' ($DETECTRON2_DATASETS, now "
            f"{env_text}; the prepare scripts also take --root)")


def incomplete_dataset_error(download: Download, root: str, problem: str,
                             extracted: bool = False) -> DatasetNotFoundError:
    """An error stating ``problem``, where datasets are read from, and how to fix it.

    ``extracted``: the download is complete and only the prepare script's output is missing, so
    the fix is running the script; otherwise it is downloading and extracting the archives.
    """
    folder = os.path.abspath(os.path.join(root, download.folder))
    same_root = os.path.abspath(root) == os.path.abspath(dataset_root())
    run = (f"run `.venv/bin/python {download.prepare_script}"
           f"{'' if same_root else ' --root ' + root}`")
    fix = run if extracted else (
        f"download {' and '.join(download.archives)} from {download.url}, extract them into "
        f"'{folder}' (exact layout: datasets/README.md), then {run}")
    return DatasetNotFoundError(f"{problem}. {_root_description(root)}. Fix: {fix}.")


def require_dir(download: Download, root: str, path: str, what: str) -> str:
    """Return ``path`` if it is a folder, else raise ``incomplete_dataset_error`` naming it."""
    if not os.path.isdir(path):
        raise incomplete_dataset_error(
            download, root, f"{download.name} {what} '{os.path.abspath(path)}' does not exist")
    return path


def replace_dataset(name: str, loader: Callable[[], List[Dict]], metadata: Dict) -> None:
    """Register ``loader`` and ``metadata`` under ``name``, replacing any earlier entry.

    Detectron2's ``Metadata`` refuses to change an attribute once set, so an entry that
    Detectron2 (or an earlier call) registered is removed from both catalogs first.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
