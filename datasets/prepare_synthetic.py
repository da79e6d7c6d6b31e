#!/usr/bin/env python3
"""Write the synthetic "game -> real" segmentation benchmark to ``<root>/synthetic_uda/``.

    python datasets/prepare_synthetic.py [--root DIR] [--nproc N] [--seed S] ...

Layout (images RGB PNG, labels single-channel uint8 PNG of Cityscapes train ids)::

    synthetic_uda/source/train/{images,labels}/000000.png   "game" style, labelled
    synthetic_uda/target/train/{images,labels}/000000.png   "real" style (labels unused by UDA)
    synthetic_uda/target/val/{images,labels}/000000.png     "real" style, for evaluation
    synthetic_uda/meta.json                                 generation parameters

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

import numpy as np

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

from duda_d2.data.datasets.file_check import file_problem  # noqa: E402
from duda_d2.data.datasets.layout import dataset_root  # noqa: E402
from duda_d2.data.datasets.project_datasets import SYNTHETIC_UDA  # noqa: E402
from duda_d2.prep.command_line import (  # noqa: E402
    prepare_argument_parser, replaced_note, run_prepare_cli)
from duda_d2.prep.png_files import write_png  # noqa: E402
from duda_d2.prep.process_pool import parallel_map  # noqa: E402
from duda_d2.prep.synthetic_scene_renderer import SYNTHETIC_CLASSES, render_scene  # noqa: E402
from duda_d2.utils.atomic_files import atomic_write_bytes  # noqa: E402

FORMAT_VERSION = 1
DATASET_DIR = SYNTHETIC_UDA.folder
META_FILE = "meta.json"
DEFAULTS = dict(seed=0, num_source=600, num_target=600, num_val=200, height=96, width=128,
                strength=0.65)


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


def _meta(params: Dict) -> Dict:
    meta = {"format_version": FORMAT_VERSION}
    meta.update({key: params[key] for key in DEFAULTS})
    meta["classes"] = list(SYNTHETIC_CLASSES)
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


def prepare_synthetic(root: Optional[str] = None, nproc: Optional[int] = None,
                      progress: bool = True, **params) -> Dict[str, int]:
    """Generate (or complete) ``<root>/synthetic_uda``; returns the counts of scenes, scenes
    rendered and skipped, files written, and damaged files replaced.

    ``params`` override ``DEFAULTS`` (seed, num_source, num_target, num_val, height, width,
    strength). Raises ``MetaMismatchError`` if the folder was made with other parameters.
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameters: {sorted(unknown)}")
    params = {**DEFAULTS, **params}
    if not 0.0 <= params["strength"] <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {params['strength']}")
    out_dir = os.path.join(dataset_root() if root is None else root, DATASET_DIR)
    _check_or_write_meta(out_dir, _meta(params))

    jobs, damaged = _jobs(out_dir, params)
    total = sum(params[split.count_key] for split in SPLITS)
    written = sum(parallel_map(_run_job, jobs, nproc or os.cpu_count() or 1, DATASET_DIR,
                               progress))
    return {"scenes": total, "rendered": len(jobs), "skipped": total - len(jobs),
            "files_written": written, "replaced": damaged}


def _argument_parser():
    p = prepare_argument_parser(__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--num-source", type=int, default=DEFAULTS["num_source"])
    p.add_argument("--num-target", type=int, default=DEFAULTS["num_target"])
    p.add_argument("--num-val", type=int, default=DEFAULTS["num_val"])
    p.add_argument("--height", type=int, default=DEFAULTS["height"])
    p.add_argument("--width", type=int, default=DEFAULTS["width"])
    p.add_argument("--strength", type=float, default=DEFAULTS["strength"],
                   help="strength of the target ('real') style, 0..1")
    return p


def _prepare(args) -> Dict[str, int]:
    return prepare_synthetic(args.root, nproc=args.nproc,
                             **{key: getattr(args, key) for key in DEFAULTS})


def _summary(args, stats: Dict[str, int]) -> str:
    root = dataset_root() if args.root is None else args.root
    return (f"{os.path.join(root, DATASET_DIR)}: {stats['scenes']} scenes, "
            f"{stats['rendered']} rendered, {stats['skipped']} already there"
            f"{replaced_note(stats['replaced'])}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_prepare_cli(_argument_parser(), argv, _prepare, _summary,
                           (MetaMismatchError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
