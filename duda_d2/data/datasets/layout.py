"""How a dataset is laid out on disk, how its files are listed, and the error a user sees when a
folder or file is missing.

Every dataset of the project is one ``DatasetLayout`` (``project_datasets.py``): its folder under
the dataset root (``$DETECTRON2_DATASETS``), the image and label suffixes, the prepare script,
where it is downloaded, and its registered splits with the (image folder, label folder) pairs
they read. Registration (``registration.py``) and the prepare scripts list files with the same
layouts, so the two never disagree.

Every missing or incomplete dataset raises ``DatasetNotFoundError`` through ``dataset_error``:
the message names what is missing, the dataset root and ``$DETECTRON2_DATASETS``, and the fix --
which archives to download from where, and which prepare script to run -- because "file not
found" alone does not tell a user whether to set a variable, extract a zip or run a script.
``check_split_files`` is what registration and the ACDC / Dark Zurich check run on a split's
files: a missing label, a label without its image, and an empty or damaged file
(``file_check.file_problem``, a header and end check) are each one error listing the files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Collection, Dict, List, Optional, Sequence, Tuple, Type

from .file_check import broken_files
from ...utils.user_errors import UserError

__all__ = ["DatasetNotFoundError", "DatasetFileError", "FolderPair", "Pair", "SplitLayout", "SubsetLayout",
           "DatasetLayout", "dataset_root", "dataset_error", "require_folder", "iter_files",
           "list_split", "require_labels", "labels_without_images", "require_images",
           "require_whole_files", "check_split_files"]

# (image folder, label folder or None for unlabelled images), relative to the dataset folder.
FolderPair = Tuple[str, Optional[str]]
# (image, label or None), relative to the dataset folder.
Pair = Tuple[str, Optional[str]]


class DatasetNotFoundError(FileNotFoundError, UserError):
    """A dataset folder is missing or incomplete; the message says how to create it."""


class DatasetFileError(DatasetNotFoundError):
    """Files of a dataset are empty or damaged; the message lists them and how to replace them."""


# How many files an error lists (the count is always given).
SHOWN_FILES = 5


@dataclass(frozen=True)
class SplitLayout:
    """A registered split: its name, the folders of its images (and labels), its metadata."""

    name: str
    folders: Tuple[FolderPair, ...]
    metadata: Dict = field(default_factory=dict)  # besides the dataset's own
    image_id_prefix: str = ""
    has_rcs_stats: bool = False  # the prepare script writes its rare-class statistics


@dataclass(frozen=True)
class SubsetLayout:
    """A registered part of a split: its records ``[start, stop)`` of the sorted listing, with
    the bounds as fractions of the split's size (so that a smaller rendering splits alike)."""

    name: str
    split: str  # the split it is cut from
    start: float  # fraction of the split's images, rounded down
    stop: float
    metadata: Dict = field(default_factory=dict)  # besides the split's own

    def bounds(self, size: int) -> Tuple[int, int]:
        """``[start, stop)`` indices of the records of a split of ``size`` images."""
        return int(self.start * size), int(self.stop * size)


@dataclass(frozen=True)
class DatasetLayout:
    """A dataset under the dataset root, and how it is made.

    An image ``<image folder>/<sub/path/stem><image_suffix>`` has its train-id label at
    ``<label folder>/<sub/path/stem><label_suffix>``.
    """

    title: str  # shown in messages
    folder: str  # the dataset's folder under the dataset root
    image_suffix: str
    label_suffix: str
    prepare_script: str  # relative to the repository
    splits: Tuple[SplitLayout, ...]
    download_url: Optional[str] = None  # None: the prepare script generates the whole dataset
    archives: Tuple[str, ...] = ()  # the downloads to extract into the dataset folder
    labels_from_prepare_script: bool = True  # False: the download ships the train-id labels
    metadata: Dict = field(default_factory=dict)  # every split's extra metadata
    subsets: Tuple[SubsetLayout, ...] = ()  # registered parts of splits

    def split(self, name: str) -> SplitLayout:
        return next(s for s in self.splits if s.name == name)

    def dataset_dir(self, root: str) -> str:
        return os.path.join(root, self.folder)

    def label_name(self, image: str) -> str:
        """The label path of ``image`` (both relative to their folders)."""
        return image[:-len(self.image_suffix)] + self.label_suffix


def dataset_root() -> str:
    """``$DETECTRON2_DATASETS`` (Detectron2's convention), else ``./datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _root_description(root: str) -> str:
    env = os.environ.get("DETECTRON2_DATASETS")
    env_text = f"'{env}'" if env is not None else "unset, i.e. ./datasets"
    return (f"Datasets are read from '{os.path.abspath(root)}' ($DETECTRON2_DATASETS, now "
            f"{env_text}; the prepare scripts also take --root)")


def dataset_error(layout: DatasetLayout, root: str, problem: str, downloaded: bool = False,
                  details: Sequence[str] = (),
                  error_type: Type[DatasetNotFoundError] = DatasetNotFoundError
                  ) -> DatasetNotFoundError:
    """An error stating ``problem``, where datasets are read from, and how to fix it, then the
    ``details`` lines (e.g. the files concerned).

    ``downloaded``: the download is complete and only the prepare script's output is missing,
    so the fix is running the script; otherwise it is downloading and extracting the archives
    first (for a dataset without download: running the script).
    """
    same_root = os.path.abspath(root) == os.path.abspath(dataset_root())
    fix = (f"run `.venv/bin/python {layout.prepare_script}"
           f"{'' if same_root else ' --root ' + root}`")
    if layout.download_url is not None and not downloaded:
        what = " and ".join(layout.archives) or layout.title
        them = "them" if len(layout.archives) > 1 else "it"
        fix = (f"download {what} from {layout.download_url}, extract {them} into "
               f"'{os.path.abspath(layout.dataset_dir(root))}' (exact layout: "
               f"datasets/README.md), then {fix}")
    lines = "".join(f"\n  {line}" for line in details)
    return error_type(f"{problem}. {_root_description(root)}. Fix: {fix}.{lines}")


def require_folder(layout: DatasetLayout, root: str, folder: str, what: str) -> str:
    """The absolute path of ``folder`` (relative to the dataset folder) if it exists, else
    raise ``dataset_error`` naming it."""
    path = os.path.abspath(os.path.join(layout.dataset_dir(root), folder))
    if not os.path.isdir(path):
        raise dataset_error(layout, root, f"{layout.title} {what} '{path}' does not exist")
    return path


def iter_files(folder: str, suffix: str) -> List[str]:
    """Paths (relative to ``folder``) of the files below it ending with ``suffix``, sorted."""
    found = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name.endswith(suffix):
                found.append(os.path.relpath(os.path.join(dirpath, name), folder))
    return sorted(found)


def _folder_pairs(layout: DatasetLayout, root: str, folders: FolderPair) -> List[Pair]:
    image_folder, label_folder = folders
    image_dir = require_folder(layout, root, image_folder, "image folder")
    if label_folder is not None:
        require_folder(layout, root, label_folder, "label folder")
    images = iter_files(image_dir, layout.image_suffix)
    if not images:
        raise dataset_error(layout, root, f"no *{layout.image_suffix} images in '{image_dir}'")
    return [(os.path.join(image_folder, image),
             None if label_folder is None else
             os.path.join(label_folder, layout.label_name(image))) for image in images]


def list_split(layout: DatasetLayout, split: SplitLayout, root: str) -> List[Pair]:
    """(image, label or None) paths of ``split``, relative to the dataset folder, after checking
    that its folders exist and hold images (the labels themselves are not checked)."""
    return [pair for folders in split.folders for pair in _folder_pairs(layout, root, folders)]


def require_labels(layout: DatasetLayout, split: SplitLayout, root: str,
                   pairs: List[Pair]) -> None:
    """Raise ``dataset_error`` listing the labels of ``pairs`` that do not exist, if any."""
    missing = [label for label in _label_paths(layout, root, pairs) if not os.path.isfile(label)]
    if missing:
        raise dataset_error(
            layout, root, f"{len(missing)} of {len(pairs)} images of {split.name} have no "
            f"train-id label", downloaded=layout.labels_from_prepare_script,
            details=_listing(missing))


def _absolute(layout: DatasetLayout, root: str, paths: Sequence[str]) -> List[str]:
    """``paths`` (relative to the dataset folder) as absolute paths."""
    dataset_dir = os.path.abspath(layout.dataset_dir(root))
    return [os.path.join(dataset_dir, path) for path in paths]


def _label_paths(layout: DatasetLayout, root: str, pairs: List[Pair]) -> List[str]:
    """The absolute paths of the labels of ``pairs``."""
    return _absolute(layout, root, [label for _, label in pairs if label is not None])


def _listing(lines: Sequence[str]) -> List[str]:
    """The first ``SHOWN_FILES`` of ``lines``, and how many more there are."""
    more = len(lines) - SHOWN_FILES
    return list(lines[:SHOWN_FILES]) + ([f"... and {more} more"] if more > 0 else [])


def labels_without_images(layout: DatasetLayout, split: SplitLayout, root: str,
                          pairs: List[Pair], suffixes: Optional[Sequence[str]] = None
                          ) -> List[str]:
    """Files of ``split``'s label folders ending with one of ``suffixes`` (default: the train-id
    label suffix) whose image is not among ``pairs``, relative to the dataset folder, sorted:
    labels whose image was not extracted."""
    images = {image for image, _ in pairs}
    orphans = []
    for image_folder, label_folder in split.folders:
        if label_folder is None:
            continue
        label_dir = os.path.join(layout.dataset_dir(root), label_folder)
        for suffix in suffixes or (layout.label_suffix,):
            for label in iter_files(label_dir, suffix):
                image = os.path.join(image_folder, label[:-len(suffix)] + layout.image_suffix)
                if image not in images:
                    orphans.append(os.path.join(label_folder, label))
    return sorted(orphans)


def require_images(layout: DatasetLayout, split: SplitLayout, root: str, pairs: List[Pair],
                   suffixes: Optional[Sequence[str]] = None) -> None:
    """Raise ``dataset_error`` listing the labels of ``labels_without_images``, if any."""
    orphans = labels_without_images(layout, split, root, pairs, suffixes)
    if orphans:
        one = len(orphans) == 1
        cause = ("deleted?" if layout.download_url is None
                 else "an image archive extracted only in part?")
        raise dataset_error(
            layout, root, f"{len(orphans)} {'label' if one else 'labels'} of {split.name} "
            f"{'has' if one else 'have'} no image ({cause})",
            details=_listing(_absolute(layout, root, orphans)))


def require_whole_files(layout: DatasetLayout, root: str, what: str, paths: Sequence[str],
                        script_outputs: Collection[str] = ()) -> None:
    """Raise ``DatasetFileError`` listing the files of ``paths`` (absolute) that are empty or
    damaged (``file_check.file_problem``), if any.

    ``what`` names the files in the message; ``script_outputs``: those of ``paths`` the prepare
    script writes (it replaces them when damaged), the others come from the download.
    """
    broken = broken_files(paths)
    if broken:
        from_script = all(path in script_outputs for path, _ in broken)
        fix = ("the prepare script writes them again" if from_script else
               "extract them again from the download")
        raise dataset_error(
            layout, root, f"{len(broken)} of {len(paths)} {what} are empty or damaged (an "
            f"interrupted copy or extraction, a full disk?); {fix}", downloaded=from_script,
            details=_listing([f"{path}: {problem}" for path, problem in broken]),
            error_type=DatasetFileError)


def check_split_files(layout: DatasetLayout, split: SplitLayout, root: str,
                      pairs: List[Pair]) -> None:
    """Check the files of ``split`` listed in ``pairs`` (by ``list_split``): every label exists,
    every train-id label in the label folders has its image, and no image or label is empty or
    damaged; raise ``dataset_error`` naming the files otherwise."""
    require_labels(layout, split, root, pairs)
    require_images(layout, split, root, pairs)
    images = _absolute(layout, root, [image for image, _ in pairs])
    labels = _label_paths(layout, root, pairs)
    outputs = set(labels) if layout.labels_from_prepare_script else set()
    if layout.download_url is None:
        outputs.update(images)
    require_whole_files(layout, root, f"image and label files of {split.name}", images + labels,
                        outputs)
