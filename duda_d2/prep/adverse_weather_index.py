"""The check-and-index step of ACDC and Dark Zurich (``datasets/prepare_{acdc,dark_zurich}.py``).

Both datasets ship Cityscapes train-id labels (``*_gt_labelTrainIds.png``) next to anonymised
images (``*_rgb_anon.png``), so nothing is converted: the layout (the one registration lists,
``duda_d2.data.datasets.project_datasets``), every file (as registration checks them: labels
present, no label without its image, no empty or damaged file) and every label's values and
size are verified, and ``<root>/<dataset>/index.json`` is written.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from ..data.datasets.layout import DatasetLayout, Pair, check_split_files, dataset_root, list_split
from ..data.labels import InvalidLabelError, load_label_map
from ..utils.atomic_files import atomic_write_bytes
from .command_line import prepare_argument_parser, run_prepare_cli
from .process_pool import parallel_map

__all__ = ["INDEX_FILE", "check_and_index", "index_cli"]

INDEX_FILE = "index.json"
INDEX_VERSION = 1


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


def indexed_splits(layout: DatasetLayout) -> List:
    """The splits the prepare script checks: not the test splits (no labels, downloaded
    separately; they are checked when ``--eval-only`` reads them)."""
    return [s for s in layout.splits if not s.metadata.get("submission")]


def _index(layout: DatasetLayout, listing: Dict[str, List[Pair]]) -> Dict:
    """The index: per split, the relative image/label paths and counts (also per folder)."""
    splits = {}
    for split in indexed_splits(layout):
        pairs = listing[split.name]
        per_folder = {folder: sum(image.startswith(folder + os.sep) for image, _ in pairs)
                      for folder, _ in split.folders}
        labels = [label for _, label in pairs if label is not None]
        splits[split.name] = {"num_images": len(pairs), "num_labels": len(labels),
                              "images_per_folder": per_folder,
                              "images": [image for image, _ in pairs], "labels": labels}
    return {"version": INDEX_VERSION, "dataset": layout.folder, "splits": splits}


def check_and_index(layout: DatasetLayout, root: Optional[str] = None, nproc: int = 1,
                    progress: bool = True) -> Dict:
    """Verify ``layout`` under ``root`` and every label (values 0..18 or 255, image size), then
    write ``<root>/<dataset>/index.json`` atomically; returns the index."""
    root = dataset_root() if root is None else root
    listing = {}
    for split in indexed_splits(layout):
        listing[split.name] = list_split(layout, split, root)
        check_split_files(layout, split, root, listing[split.name])
    dataset_dir = layout.dataset_dir(root)
    _check_labels(dataset_dir, listing, nproc, f"{layout.folder} labels", progress)
    index = _index(layout, listing)
    atomic_write_bytes(os.path.join(dataset_dir, INDEX_FILE),
                       (json.dumps(index, indent=1) + "\n").encode())
    return index


def _summary(layout: DatasetLayout, root: Optional[str], index: Dict) -> str:
    lines = [f"{name}: {split['num_images']} images, {split['num_labels']} labels"
             for name, split in index["splits"].items()]
    root = dataset_root() if root is None else root
    return "\n".join(lines + [f"wrote {os.path.join(layout.dataset_dir(root), INDEX_FILE)}"])


def index_cli(layout: DatasetLayout, argv: Optional[Sequence[str]] = None) -> int:
    """The command line of ``datasets/prepare_{acdc,dark_zurich}.py``: check, index, report."""
    parser = prepare_argument_parser(f"Check the {layout.title} layout and labels, write "
                                     f"<root>/{layout.folder}/{INDEX_FILE}.")
    return run_prepare_cli(parser, argv,
                           lambda args: check_and_index(layout, args.root, args.nproc),
                           lambda args, index: _summary(layout, args.root, index),
                           (FileNotFoundError, InvalidLabelError))
