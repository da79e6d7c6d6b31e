"""ACDC and Dark Zurich: their folder layouts, file listing, and the check-and-index step.

Both datasets ship Cityscapes train-id labels (``*_gt_labelTrainIds.png``) next to anonymised
images (``*_rgb_anon.png``), so nothing is converted: ``datasets/prepare_acdc.py`` and
``datasets/prepare_dark_zurich.py`` run ``check_and_index`` with their layout to verify the
layout and every label's values and size, and write ``index.json``. Registration
(``register_adverse.py``) lists files with the same layouts, so the two never disagree.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from PIL import Image

from ..labels import InvalidLabelError, load_label_map
from ..preparation import iter_files, parallel_map, prepare_arguments, write_atomic
from .paths import dataset_root
from .real_datasets import ACDC, DARK_ZURICH, Download, incomplete_dataset_error, require_dir

__all__ = ["SplitLayout", "DatasetLayout", "ACDC_LAYOUT", "DARK_ZURICH_LAYOUT", "INDEX_FILE",
           "list_split", "check_and_index", "prepare_cli"]

IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_SUFFIX = "_gt_labelTrainIds.png"
INDEX_FILE = "index.json"
INDEX_VERSION = 1
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")

# (image folder, label folder or None for unlabelled), relative to the dataset folder.
Folders = Tuple[Tuple[str, Optional[str]], ...]
Pair = Tuple[str, Optional[str]]


class SplitLayout(NamedTuple):
    """A registered split: its name and the folders its images (and labels) come from."""
    name: str
    folders: Folders


class DatasetLayout(NamedTuple):
    """A dataset: where it comes from and its splits."""
    download: Download
    splits: Tuple[SplitLayout, ...]

    def split(self, name: str) -> SplitLayout:
        return next(s for s in self.splits if s.name == name)


def _acdc_split(split: str) -> SplitLayout:
    return SplitLayout(f"acdc_{split}", tuple((f"rgb_anon/{c}/{split}", f"gt/{c}/{split}")
                                              for c in ACDC_CONDITIONS))


ACDC_LAYOUT = DatasetLayout(ACDC, (_acdc_split("train"), _acdc_split("val")))
# dark_zurich_train: the unlabelled night images only (train/day and train/twilight are unused).
DARK_ZURICH_LAYOUT = DatasetLayout(DARK_ZURICH, (
    SplitLayout("dark_zurich_train", (("rgb_anon/train/night", None),)),
    SplitLayout("dark_zurich_val", (("rgb_anon/val/night", "gt/val/night"),)),
))


def _label_name(image_name: str) -> str:
    return image_name[:-len(IMAGE_SUFFIX)] + LABEL_SUFFIX


def _folder_pairs(root: str, download: Download, image_folder: str,
                  label_folder: Optional[str]) -> List[Pair]:
    """(image, label) paths relative to the dataset folder, for one image folder."""
    dataset_dir = os.path.join(root, download.folder)
    image_dir = require_dir(download, root, os.path.join(dataset_dir, image_folder),
                            "image folder")
    if label_folder is not None:
        require_dir(download, root, os.path.join(dataset_dir, label_folder), "label folder")
    names = list(iter_files(image_dir, IMAGE_SUFFIX))
    if not names:
        raise incomplete_dataset_error(
            download, root, f"no *{IMAGE_SUFFIX} images in '{os.path.abspath(image_dir)}'")
    return [(os.path.join(image_folder, n),
             None if label_folder is None else os.path.join(label_folder, _label_name(n)))
            for n in names]


def list_split(root: str, layout: DatasetLayout, split: SplitLayout) -> List[Pair]:
    """(image, label or None) paths relative to the dataset folder; every label must exist."""
    dataset_dir = require_dir(layout.download, root, os.path.join(root, layout.download.folder),
                              "folder")
    pairs = [p for image_folder, label_folder in split.folders
             for p in _folder_pairs(root, layout.download, image_folder, label_folder)]
    missing = [label for _, label in pairs
               if label is not None and not os.path.isfile(os.path.join(dataset_dir, label))]
    if missing:
        raise incomplete_dataset_error(
            layout.download, root, f"{len(missing)} of {len(pairs)} images of {split.name} have "
            f"no label (first missing: '{os.path.abspath(os.path.join(dataset_dir, missing[0]))}'"
            f"; {layout.download.archives[-1]} half-extracted?)")
    return pairs


def _check_pair(paths: Tuple[str, str]) -> Optional[str]:
    """Why the label ``paths[1]`` of image ``paths[0]`` is unusable, or None if it is fine."""
    image, label = paths
    try:
        label_map = load_label_map(label)
        with Image.open(image) as img:  # reads the header only
            width, height = img.size
    except (InvalidLabelError, OSError) as e:
        return str(e)
    if label_map.shape != (height, width):
        return (f"label '{label}' is {label_map.shape[0]}x{label_map.shape[1]} but its image "
                f"'{image}' is {height}x{width}")
    return None


def _check_labels(dataset_dir: str, listing: Dict[str, List[Pair]], nproc: int, desc: str,
                  progress: bool) -> None:
    """Check every label in parallel; raise one ``InvalidLabelError`` listing the bad ones."""
    jobs = [(os.path.join(dataset_dir, image), os.path.join(dataset_dir, label))
            for pairs in listing.values() for image, label in pairs if label is not None]
    problems = sorted(p for p in parallel_map(_check_pair, jobs, nproc, desc, progress) if p)
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InvalidLabelError(f"{len(problems)} of {len(jobs)} label files in "
                                f"'{os.path.abspath(dataset_dir)}' are invalid:\n  {shown}{more}")


def _index(layout: DatasetLayout, listing: Dict[str, List[Pair]]) -> Dict:
    """The index: per split, the relative image/label paths and counts (also per folder)."""
    splits = {}
    for split in layout.splits:
        pairs = listing[split.name]
        per_folder = {folder: sum(image.startswith(folder + os.sep) for image, _ in pairs)
                      for folder, _ in split.folders}
        labels = [label for _, label in pairs if label is not None]
        splits[split.name] = {"num_images": len(pairs), "num_labels": len(labels),
                              "images_per_folder": per_folder,
                              "images": [image for image, _ in pairs], "labels": labels}
    return {"version": INDEX_VERSION, "dataset": layout.download.folder, "splits": splits}


def check_and_index(layout: DatasetLayout, root: Optional[str] = None, nproc: int = 1,
                    progress: bool = True) -> Dict:
    """Verify ``layout`` under ``root`` and every label (values 0..18 or 255, image size), then
    write ``<root>/<dataset>/index.json`` atomically; returns the index."""
    root = dataset_root() if root is None else root
    listing = {split.name: list_split(root, layout, split) for split in layout.splits}
    dataset_dir = os.path.join(root, layout.download.folder)
    _check_labels(dataset_dir, listing, nproc, f"{layout.download.folder} labels", progress)
    index = _index(layout, listing)
    write_atomic(os.path.join(dataset_dir, INDEX_FILE),
                 (json.dumps(index, indent=1) + "\n").encode())
    return index


def prepare_cli(layout: DatasetLayout, argv: Optional[Sequence[str]] = None) -> int:
    """The command line of ``datasets/prepare_{acdc,dark_zurich}.py``: check, index, report."""
    args = prepare_arguments(f"Check the {layout.download.name} layout and labels, write "
                             f"<root>/{layout.download.folder}/{INDEX_FILE}.", argv)
    try:
        index = check_and_index(layout, args.root, args.nproc)
    except (FileNotFoundError, InvalidLabelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, split in index["splits"].items():
        print(f"{name}: {split['num_images']} images, {split['num_labels']} labels")
    root = dataset_root() if args.root is None else args.root
    print(f"wrote {os.path.join(root, layout.download.folder, INDEX_FILE)}")
    return 0
