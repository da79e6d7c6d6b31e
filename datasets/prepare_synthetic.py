#!/usr/bin/env python3
"""Write the synthetic "game -> real" segmentation benchmark to ``<root>/synthetic_uda/``.

    python datasets/prepare_synthetic.py [--root DIR] [--nproc N] [--seed S] [--panoptic] ...

Layout (images RGB PNG, labels single-channel uint8 PNG of Cityscapes train ids)::

    synthetic_uda/source/train/{images,labels}/000000.png   "game" style, labelled
    synthetic_uda/target/train/{images,labels}/000000.png   "real" style (labels unused by UDA)
    synthetic_uda/target/val/{images,labels}/000000.png     "real" style, for evaluation
    synthetic_uda/meta.json                                 generation parameters

``--panoptic`` writes the panoptic variant instead, into its own folder: the same scenes
(same seeds), rendered at 192x256 by default (twice the semantic size: at 96x128 the median
person covers ~41 px, at 192x256 ~141 px; datasets/README.md), with panoptic ground truth in
cityscapesscripts' createPanopticImgs format (``duda_d2.prep.panoptic_format``)::

    synthetic_uda/panoptic/<domain>/<split>/images/000000.png     RGB image
    synthetic_uda/panoptic/<domain>/<split>/labels/000000.png     train ids
    synthetic_uda/panoptic/<domain>/<split>/panoptic/000000.png   RGB panoptic ids
    synthetic_uda/panoptic/<domain>/<split>/panoptic.json         segments of every image
    synthetic_uda/panoptic/meta.json, rcs_stats.json

The script is resumable: files that exist are skipped and every file is written atomically, so
an interrupted run can simply be started again; an existing file that is empty or damaged (a
crash, a full disk, a copy cut short: ``file_problem``'s header and end check) is written
again. Re-running with different parameters into an existing folder is refused, because it
would mix two datasets.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.file_check import file_problem  # noqa: E402
from duda_d2.data.datasets.layout import dataset_root  # noqa: E402
from duda_d2.data.datasets.panoptic_datasets import (  # noqa: E402
    SYNTHETIC_UDA_PANOPTIC, panoptic_split)
from duda_d2.data.datasets.project_datasets import (  # noqa: E402
    SYNTHETIC_UDA, SYNTHETIC_UDA_PRETRAIN, SYNTHETIC_UDA_SOURCE_VAL)
from duda_d2.prep.command_line import (  # noqa: E402
    prepare_argument_parser, replaced_note, run_prepare_cli)
from duda_d2.prep.panoptic_format import (  # noqa: E402
    panoptic_id_map, read_id_map, segments_info, write_id_png, write_panoptic_json)
from duda_d2.prep.png_files import write_png  # noqa: E402
from duda_d2.prep.process_pool import parallel_map  # noqa: E402
from duda_d2.prep.rcs_stats_computation import class_pixel_counts, save_rcs_stats  # noqa: E402
from duda_d2.prep.synthetic_scene_renderer import (  # noqa: E402
    SYNTHETIC_CLASSES, THING_CLASSES, render_panoptic_scene, render_scene)
from duda_d2.utils.atomic_files import atomic_write_bytes  # noqa: E402

FORMAT_VERSION = 1
DATASET_DIR = SYNTHETIC_UDA.folder
META_FILE = "meta.json"
DEFAULTS = dict(seed=0, num_source=600, num_target=600, num_val=200, height=96, width=128,
                strength=0.65)
# The panoptic variant: same scenes and counts, twice the size (persons must be learnable).
PANOPTIC_FORMAT_VERSION = 1
PANOPTIC_DEFAULTS = {**DEFAULTS, "height": 192, "width": 256}
PANOPTIC_DIR = SYNTHETIC_UDA_PANOPTIC.folder


class Split(NamedTuple):
    name: str  # the registered split, whose layout gives the image and label folders
    style: str
    count_key: str  # which parameter holds the number of images


# The position of a split in this tuple is part of its scene seeds: keep the order.
SPLITS = (Split("synthetic_uda_source_train", "source", "num_source"),
          Split("synthetic_uda_target_train", "target", "num_target"),
          Split("synthetic_uda_target_val", "target", "num_val"))


class Job(NamedTuple):
    image_path: str
    label_path: str
    scene_seed: int
    style: str
    height: int
    width: int
    strength: float


class MetaMismatchError(RuntimeError):
    """The output folder holds a dataset generated with other parameters."""


def scene_seed(seed: int, split_index: int, index: int) -> int:
    """Scene seed of image ``index`` of split ``split_index``: distinct across splits."""
    return int(np.random.SeedSequence([seed, split_index, index]).generate_state(1)[0])


def _meta(params: Dict, panoptic: bool = False) -> Dict:
    meta = {"format_version": PANOPTIC_FORMAT_VERSION if panoptic else FORMAT_VERSION}
    meta.update({key: params[key] for key in DEFAULTS})
    meta["classes"] = list(SYNTHETIC_CLASSES)
    if panoptic:
        meta["thing_classes"] = list(THING_CLASSES)
    return meta


def _check_or_write_meta(out_dir: str, meta: Dict) -> None:
    path = os.path.join(out_dir, META_FILE)
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != meta:
            diff = {k: (existing.get(k), meta.get(k)) for k in sorted(set(existing) | set(meta))
                    if existing.get(k) != meta.get(k)}
            raise MetaMismatchError(
                f"'{out_dir}' holds a synthetic dataset made with other parameters "
                f"(existing vs requested: {diff}). Delete that folder to regenerate it, or "
                f"pass the same parameters to resume it.")
        return
    atomic_write_bytes(path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def _to_write(path: str) -> bool:
    """Whether ``path`` is missing, empty or damaged."""
    return file_problem(path) is not None


def _jobs(out_dir: str, params: Dict) -> Tuple[List[Job], int]:
    """The images still to write (an image or its label missing or damaged), creating their
    folders, and how many damaged files they replace."""
    jobs, damaged = [], 0
    for split_index, split in enumerate(SPLITS):
        image_dir, label_dir = (os.path.join(out_dir, folder)
                                for folder in SYNTHETIC_UDA.split(split.name).folders[0])
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for index in range(params[split.count_key]):
            name = f"{index:06d}.png"
            image_path, label_path = os.path.join(image_dir, name), os.path.join(label_dir, name)
            broken = [p for p in (image_path, label_path) if _to_write(p)]
            if not broken:
                continue
            damaged += sum(os.path.exists(p) for p in broken)
            jobs.append(Job(image_path, label_path, scene_seed(params["seed"], split_index, index),
                            split.style, params["height"], params["width"], params["strength"]))
    return jobs, damaged


def _run_job(job: Job) -> int:
    """Render one scene and write whichever of its two files is missing or damaged; returns the
    number of files written."""
    image, label = render_scene(job.scene_seed, job.style, job.height, job.width, job.strength)
    written = 0
    for path, array in ((job.image_path, image), (job.label_path, label)):
        if _to_write(path):
            write_png(path, array)
            written += 1
    return written


def _parameters(params: Dict, defaults: Dict) -> Dict:
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown parameters: {sorted(unknown)}")
    params = {**defaults, **params}
    if not 0.0 <= params["strength"] <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {params['strength']}")
    return params


def prepare_synthetic(root: Optional[str] = None, nproc: Optional[int] = None,
                      progress: bool = True, panoptic: bool = False,
                      **params) -> Dict[str, int]:
    """Generate (or complete) ``<root>/synthetic_uda``; returns the counts of scenes, scenes
    rendered and skipped, files written, and damaged files replaced.

    ``params`` override ``DEFAULTS`` (seed, num_source, num_target, num_val, height, width,
    strength). Raises ``MetaMismatchError`` if the folder was made with other parameters.
    ``panoptic``: write the panoptic variant instead (``prepare_synthetic_panoptic``).
    """
    if panoptic:
        return prepare_synthetic_panoptic(root, nproc, progress, **params)
    params = _parameters(params, DEFAULTS)
    out_dir = os.path.join(dataset_root() if root is None else root, DATASET_DIR)
    _check_or_write_meta(out_dir, _meta(params))

    jobs, damaged = _jobs(out_dir, params)
    total = sum(params[split.count_key] for split in SPLITS)
    written = sum(parallel_map(_run_job, jobs, nproc or os.cpu_count() or 1, DATASET_DIR,
                               progress))
    return {"scenes": total, "rendered": len(jobs), "skipped": total - len(jobs),
            "files_written": written, "replaced": damaged}


# --------------------------------------------------------------------------------------------
# Source-style scenes for encoder pretraining (tools/pretrain_synthetic.py)
# --------------------------------------------------------------------------------------------
PRETRAIN_DIR = SYNTHETIC_UDA_PRETRAIN.folder
# Scene seeds continue SPLITS' numbering: split indices 3 and 4 are used by no benchmark split,
# so no pretraining or source-val scene is a benchmark scene (nor one of each other).
PRETRAIN_SPLIT_INDEX = len(SPLITS)
SOURCE_VAL_SPLIT_INDEX = len(SPLITS) + 1
PRETRAIN_DEFAULTS = dict(seed=DEFAULTS["seed"], num_images=2400, height=DEFAULTS["height"],
                         width=DEFAULTS["width"])
SOURCE_VAL_DEFAULTS = {**PRETRAIN_DEFAULTS, "num_images": 200}


def prepare_source_scenes(layout, split_index: int, defaults: Dict,
                          root: Optional[str] = None, nproc: Optional[int] = None,
                          progress: bool = True, **params) -> Dict[str, int]:
    """Generate (or complete) the single split of ``layout``: source ("game") style scenes
    only -- nothing of the target style is rendered -- with their train-id labels, seeded by
    ``split_index``. ``params`` override ``defaults``; ``MetaMismatchError`` if the folder was
    made with other parameters. Returns the counts as ``prepare_synthetic``."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown parameters: {sorted(unknown)}")
    params = {**defaults, **params}
    out_dir = os.path.join(dataset_root() if root is None else root, layout.folder)
    _check_or_write_meta(out_dir, {"format_version": FORMAT_VERSION, "style": "source",
                                   "classes": list(SYNTHETIC_CLASSES), **params})
    (split,) = layout.splits
    image_dir, label_dir = (os.path.join(out_dir, f) for f in split.folders[0])
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    jobs, damaged = [], 0
    for index in range(params["num_images"]):
        paths = [os.path.join(d, f"{index:06d}.png") for d in (image_dir, label_dir)]
        broken = [p for p in paths if _to_write(p)]
        if broken:
            damaged += sum(os.path.exists(p) for p in broken)
            jobs.append(Job(*paths, scene_seed(params["seed"], split_index, index),
                            "source", params["height"], params["width"],
                            DEFAULTS["strength"]))  # the strength shapes the target style only
    written = sum(parallel_map(_run_job, jobs, nproc or os.cpu_count() or 1, layout.folder,
                               progress))
    total = params["num_images"]
    return {"scenes": total, "rendered": len(jobs), "skipped": total - len(jobs),
            "files_written": written, "replaced": damaged}


def prepare_source_pretraining(root: Optional[str] = None, nproc: Optional[int] = None,
                               progress: bool = True, **params) -> Dict[str, int]:
    """``<root>/synthetic_uda_pretrain``: 2400 source-style scenes for encoder pretraining."""
    return prepare_source_scenes(SYNTHETIC_UDA_PRETRAIN, PRETRAIN_SPLIT_INDEX, PRETRAIN_DEFAULTS,
                                 root, nproc, progress, **params)


def prepare_source_val(root: Optional[str] = None, nproc: Optional[int] = None,
                       progress: bool = True, **params) -> Dict[str, int]:
    """``<root>/synthetic_uda_source_val``: 200 labelled source-style scenes no run trains on."""
    return prepare_source_scenes(SYNTHETIC_UDA_SOURCE_VAL, SOURCE_VAL_SPLIT_INDEX,
                                 SOURCE_VAL_DEFAULTS, root, nproc, progress, **params)


# --------------------------------------------------------------------------------------------
# The panoptic variant
# --------------------------------------------------------------------------------------------
class PanopticJob(NamedTuple):
    split: str  # the registered panoptic split
    index: int
    image_path: str
    label_path: str
    panoptic_path: str
    scene_seed: int
    style: str
    height: int
    width: int
    strength: float


class PanopticResult(NamedTuple):
    split: str
    index: int
    files_written: int
    segments: List[Dict]
    class_pixels: Dict[str, int]
    size: Tuple[int, int]


def _panoptic_jobs(out_dir: str, params: Dict) -> List[PanopticJob]:
    """One job per scene of every split (each job renders only what is missing or damaged)."""
    jobs = []
    for split_index, split in enumerate(SPLITS):
        name = f"{split.name}_panoptic"
        image_folder, label_folder = SYNTHETIC_UDA_PANOPTIC.split(name).folders[0]
        panoptic_folder = panoptic_split(name).panoptic_root
        for index in range(params[split.count_key]):
            file_name = f"{index:06d}.png"
            paths = [os.path.join(out_dir, folder, file_name)
                     for folder in (image_folder, label_folder, panoptic_folder)]
            jobs.append(PanopticJob(name, index, *paths,
                                    scene_seed(params["seed"], split_index, index), split.style,
                                    params["height"], params["width"], params["strength"]))
    return jobs


def _run_panoptic_job(job: PanopticJob) -> PanopticResult:
    """Render the scene if one of its three files is missing or damaged and write those; then
    the segments and class pixel counts of the (written or existing) ground truth."""
    paths = (job.image_path, job.label_path, job.panoptic_path)
    broken = [path for path in paths if _to_write(path)]
    if broken:
        image, label, instances = render_panoptic_scene(job.scene_seed, job.style, job.height,
                                                        job.width, job.strength)
        ids = panoptic_id_map(label, instances)
        for path in broken:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if path == job.panoptic_path:
                write_id_png(path, ids)
            else:
                write_png(path, image if path == job.image_path else label)
    else:
        label = cv2.imread(job.label_path, cv2.IMREAD_UNCHANGED)
        ids = read_id_map(job.panoptic_path)
    return PanopticResult(job.split, job.index, len(broken), segments_info(ids),
                          class_pixel_counts(label), label.shape[:2])


def _write_panoptic_annotations(out_dir: str, results: Sequence[PanopticResult]) -> None:
    """One panoptic JSON per split and the RCS statistics of every label."""
    by_split: Dict[str, List[PanopticResult]] = {}
    for result in sorted(results, key=lambda r: (r.split, r.index)):
        by_split.setdefault(result.split, []).append(result)
    for name, rows in by_split.items():
        layout_split = SYNTHETIC_UDA_PANOPTIC.split(name)
        images, annotations = [], []
        for row in rows:
            file_name = f"{row.index:06d}.png"
            image_id = f"{layout_split.image_id_prefix}{row.index:06d}"
            images.append({"id": image_id, "file_name": file_name, "height": row.size[0],
                           "width": row.size[1]})
            annotations.append({"image_id": image_id, "file_name": file_name,
                                "segments_info": row.segments})
        write_panoptic_json(os.path.join(out_dir, panoptic_split(name).panoptic_json), images,
                            annotations)
    stats = {}
    for result in results:
        label_folder = SYNTHETIC_UDA_PANOPTIC.split(result.split).folders[0][1]
        stats[f"{label_folder}/{result.index:06d}.png"] = result.class_pixels
    save_rcs_stats(out_dir, stats)


def prepare_synthetic_panoptic(root: Optional[str] = None, nproc: Optional[int] = None,
                               progress: bool = True, **params) -> Dict[str, int]:
    """Generate (or complete) ``<root>/synthetic_uda/panoptic``: images, train-id labels and
    panoptic PNGs of every scene, then each split's panoptic JSON and the RCS statistics
    (always rewritten, from the files on disk). Returns counts as ``prepare_synthetic``.

    ``params`` override ``PANOPTIC_DEFAULTS``; ``MetaMismatchError`` if the folder was made
    with other parameters.
    """
    params = _parameters(params, PANOPTIC_DEFAULTS)
    out_dir = os.path.join(dataset_root() if root is None else root, PANOPTIC_DIR)
    _check_or_write_meta(out_dir, _meta(params, panoptic=True))
    jobs = _panoptic_jobs(out_dir, params)
    damaged = sum(os.path.exists(p) and _to_write(p) for job in jobs
                  for p in (job.image_path, job.label_path, job.panoptic_path))
    results = parallel_map(_run_panoptic_job, jobs, nproc or os.cpu_count() or 1, PANOPTIC_DIR,
                           progress)
    _write_panoptic_annotations(out_dir, results)
    rendered = sum(r.files_written > 0 for r in results)
    return {"scenes": len(jobs), "rendered": rendered, "skipped": len(jobs) - rendered,
            "files_written": sum(r.files_written for r in results), "replaced": damaged}


def _argument_parser():
    p = prepare_argument_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--num-source", type=int, default=DEFAULTS["num_source"])
    p.add_argument("--num-target", type=int, default=DEFAULTS["num_target"])
    p.add_argument("--num-val", type=int, default=DEFAULTS["num_val"])
    p.add_argument("--height", type=int, default=None,
                   help=f"image height; default {DEFAULTS['height']} "
                        f"({PANOPTIC_DEFAULTS['height']} with --panoptic)")
    p.add_argument("--width", type=int, default=None,
                   help=f"image width; default {DEFAULTS['width']} "
                        f"({PANOPTIC_DEFAULTS['width']} with --panoptic)")
    p.add_argument("--strength", type=float, default=DEFAULTS["strength"],
                   help="strength of the target ('real') style, 0..1")
    p.add_argument("--source-val", action="store_true",
                   help="write synthetic_uda_source_val (200 labelled source-style scenes no run "
                        "trains on, for the source-val checkpoint signal) instead")
    p.add_argument("--panoptic", action="store_true",
                   help="write the panoptic variant (synthetic_uda/panoptic, 192x256 by default)"
                        " instead of the semantic benchmark")
    return p


def _prepare(args) -> Dict[str, int]:
    if args.source_val:
        return prepare_source_val(args.root, nproc=args.nproc)
    params = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None}
    return prepare_synthetic(args.root, nproc=args.nproc, panoptic=args.panoptic, **params)


def _summary(args, stats: Dict[str, int]) -> str:
    root = dataset_root() if args.root is None else args.root
    folder = (SYNTHETIC_UDA_SOURCE_VAL.folder if args.source_val
              else PANOPTIC_DIR if args.panoptic else DATASET_DIR)
    return (f"{os.path.join(root, folder)}: {stats['scenes']} scenes, "
            f"{stats['rendered']} rendered, {stats['skipped']} already there"
            f"{replaced_note(stats['replaced'])}"
            f"{'; panoptic JSONs and rcs_stats.json written' if args.panoptic else ''}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_prepare_cli(_argument_parser(), argv, _prepare, _summary,
                           (MetaMismatchError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
