"""Your own unlabelled images as a registered data set: a folder, a glob or a list file.

    DATASETS:
      IMAGE_FOLDERS: ["fleet_train=/data/fleet/train", "fleet_night=/data/night/*.jpg",
                      "fleet_pick=/data/fleet/selected.txt"]
      TARGET_TRAIN: ("fleet_train",)

or, in code, ``register_image_folder("fleet_train", "/data/fleet/train")``. A spec is

* a folder: every image below it (``.png .jpg .jpeg .bmp .tif .tiff .webp``, recursively);
* a glob pattern (``*``, ``?``, ``[``; ``**`` recurses);
* a ``.txt`` file: one image path per line (relative paths are relative to the file's folder;
  blank lines and ``#`` comments are skipped).

Records are ``file_name`` and ``image_id`` (the path relative to the folder / the pattern's or
list's folder, without the extension): images of any size, resized by ``INPUT.TARGET_SIZE`` in
training. Like every other data set, the files are checked when the records are read: a spec that
matches nothing, a listed file that is missing and an empty or damaged image are each an error
that lists the files. The data set has no labels (``has_labels=False``): ``--eval-only`` on it
writes predictions and overlays instead of scores.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple

from .cityscapes_classes import cityscapes_sem_seg_metadata
from .file_check import broken_files
from .layout import SHOWN_FILES, DatasetFileError, DatasetNotFoundError
from .registration import replace_dataset

__all__ = ["IMAGE_EXTENSIONS", "image_paths", "image_folder_records", "register_image_folder",
           "parse_folder_specs", "register_config_folders", "require_whole_user_files"]

IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARACTERS = "*?["


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _glob_base(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard."""
    cut = min(pattern.index(c) for c in _GLOB_CHARACTERS if c in pattern)
    return os.path.dirname(pattern[:cut]) or "."


def _listed(list_file: str) -> Tuple[List[str], str]:
    base = os.path.dirname(os.path.abspath(list_file))
    paths, missing = [], []
    with open(list_file) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = line if os.path.isabs(line) else os.path.join(base, line)
            (paths if os.path.isfile(path) else missing).append(path)
    if missing:
        shown = "\n  ".join(missing[:SHOWN_FILES])
        raise DatasetNotFoundError(
            f"{len(missing)} of the images listed in '{list_file}' do not exist, e.g.:\n  "
            f"{shown}\nFix the paths (relative paths are relative to the list's folder).")
    return paths, base


def image_paths(spec: str) -> Tuple[List[str], str]:
    """The sorted image files of ``spec`` (folder, glob or .txt list) and the folder their ids
    are relative to; ``DatasetNotFoundError`` when there are none."""
    spec = os.path.expanduser(spec)
    if any(c in spec for c in _GLOB_CHARACTERS):
        paths, base = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)], \
            _glob_base(spec)
        what = f"the pattern '{spec}'"
    elif spec.endswith(".txt"):
        if not os.path.isfile(spec):
            raise DatasetNotFoundError(f"image list '{spec}' does not exist")
        paths, base = _listed(spec)
        what = f"the list '{spec}'"
    elif os.path.isdir(spec):
        paths = [os.path.join(d, n) for d, _, names in os.walk(spec) for n in names
                 if _is_image(n)]
        base, what = spec, f"the folder '{spec}'"
    else:
        raise DatasetNotFoundError(
            f"image folder '{spec}' does not exist (a spec is a folder, a glob pattern such as "
            f"'/data/*.jpg', or a .txt file listing image paths)")
    paths = sorted(os.path.abspath(p) for p in paths if _is_image(p))
    if not paths:
        raise DatasetNotFoundError(
            f"{what} holds no image (looked for {' '.join(IMAGE_EXTENSIONS)})")
    return paths, os.path.abspath(base)


def require_whole_user_files(paths: Sequence[str], what: str, fix: str) -> None:
    """``DatasetFileError`` listing the empty or damaged files of ``paths`` (your own data: no
    layout, prepare script or download to name, unlike ``layout.require_whole_files``)."""
    broken = broken_files(paths)
    if broken:
        shown = "\n  ".join(f"{p}: {why}" for p, why in broken[:SHOWN_FILES])
        raise DatasetFileError(f"{len(broken)} of the {len(paths)} {what} are empty or "
                               f"damaged, e.g.:\n  {shown}\n{fix}")


def image_folder_records(spec: str) -> List[Dict]:
    """Detectron2 records of the images of ``spec``, after checking every file."""
    paths, base = image_paths(spec)
    require_whole_user_files(paths, f"images of '{spec}'",
                             "Replace or remove them (a copy cut short, a full disk).")
    return [{"file_name": p, "image_id": os.path.splitext(os.path.relpath(p, base))[0]}
            for p in paths]


def register_image_folder(name: str, spec: str, metadata: Optional[Dict] = None) -> None:
    """Register the images of ``spec`` as the unlabelled data set ``name`` (lazily: nothing is
    read until it is used). ``metadata`` replaces the 19 Cityscapes classes (e.g. your own
    source's class list, which target and source must share)."""
    meta = dict(metadata) if metadata is not None else cityscapes_sem_seg_metadata()
    meta.update(domain="target", has_labels=False, image_spec=spec)
    replace_dataset(name, lambda: image_folder_records(spec), meta)


def parse_folder_specs(entries: Sequence[str], key: str) -> List[Tuple[str, str]]:
    """``["name=spec", ...]`` as pairs; ``ValueError`` naming ``key`` for a malformed entry."""
    pairs = []
    for entry in entries:
        name, sep, spec = str(entry).partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ValueError(f"{key} entry {entry!r} is not NAME=SPEC (e.g. "
                             f"'fleet_train=/data/fleet/images')")
        pairs.append((name.strip(), spec.strip()))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"{key} names a data set twice: {names}")
    return pairs


def register_config_folders(cfg) -> None:
    """Register ``DATASETS.IMAGE_FOLDERS`` with the class list of the run's source (which the
    target shares), or the 19 Cityscapes classes."""
    from detectron2.data import MetadataCatalog

    pairs = parse_folder_specs(cfg.DATASETS.IMAGE_FOLDERS, "DATASETS.IMAGE_FOLDERS")
    sources = list(cfg.DATASETS.SOURCE_TRAIN) or list(cfg.DATASETS.TRAIN)
    registered = {n for n, _ in pairs}
    metadata = None
    for source in sources:
        source_meta = MetadataCatalog.get(source) if source not in registered else None
        if source_meta is not None and hasattr(source_meta, "stuff_classes"):
            metadata = cityscapes_sem_seg_metadata(
                stuff_classes=list(source_meta.stuff_classes),
                stuff_colors=list(source_meta.stuff_colors))
            break
    for name, spec in pairs:
        register_image_folder(name, spec, metadata)
