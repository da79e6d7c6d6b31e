#!/usr/bin/env python3
"""Prepare your own labelled images (a source, or a labelled target for evaluation) with your
own class list, for ``DATASETS.LABELLED_FOLDERS``.

    python datasets/prepare_labelled_folder.py --images DIR --labels DIR \\
        --class-map classes.json --output datasets/my_source [--domain source|target]

``classes.json`` lists the training classes in order; each takes the source label ids that
become it, every other id is ignored (255)::

    {"classes": [{"name": "flat", "color": [128, 64, 128], "source_ids": [0, 1]},
                 {"name": "vehicle", "color": [0, 0, 142], "source_ids": [13, 14, 15]}]}

An image ``<images>/<sub/path/stem><image-suffix>`` has its label at
``<labels>/<sub/path/stem><label-suffix>`` (single-channel PNG of the source's ids). Writes
``<output>/labels/<sub/path/stem>.png`` (train ids of the new class list), ``rcs_stats.json``
(the rare-class-sampling statistics) and, last, ``dataset.json`` (images folder, classes,
colours, the class map, the pairs). Resumable: labels already written are read back, not
redone; preparing a folder again with another class map is refused.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from duda_d2.data.datasets.file_check import file_problem
from duda_d2.data.datasets.labelled_folders import DESCRIPTION_FILE
from duda_d2.data.datasets.layout import iter_files
from duda_d2.prep.command_line import prepare_argument_parser, run_prepare_cli
from duda_d2.prep.png_files import write_png
from duda_d2.prep.process_pool import parallel_map
from duda_d2.prep.rcs_stats_computation import class_pixel_counts, save_rcs_stats
from duda_d2.utils.atomic_files import atomic_write_bytes

FORMAT_VERSION = 1
IGNORE = 255


class ClassMapError(ValueError):
    """The class map or the labels do not fit together."""


class Job(NamedTuple):
    key: str  # the output label relative to the prepared folder (the RCS statistics' key)
    source_label: str
    output_label: str
    table: bytes  # source id -> train id, 65536 entries (uint8)
    num_classes: int


def read_class_map(path: str) -> Dict:
    """``{"names", "colors", "table"}`` of a class-map file; ``ClassMapError`` when malformed."""
    with open(path) as f:
        data = json.load(f)
    classes = data.get("classes") if isinstance(data, dict) else None
    if not classes or not isinstance(classes, list):
        raise ClassMapError(f"class map '{path}' needs a non-empty \"classes\" list")
    if len(classes) > IGNORE:
        raise ClassMapError(f"class map '{path}' has {len(classes)} classes; at most 255")
    table = np.full(65536, IGNORE, dtype=np.uint8)
    owner: Dict[int, str] = {}
    names, colors = [], []
    rng = np.random.default_rng(0)
    for index, entry in enumerate(classes):
        name = entry.get("name")
        ids = entry.get("source_ids")
        if not name or not isinstance(ids, list) or not ids:
            raise ClassMapError(f"class {index} of '{path}' needs a \"name\" and a non-empty "
                                f"\"source_ids\" list, got {entry}")
        for source_id in ids:
            if not isinstance(source_id, int) or not 0 <= source_id < 65536:
                raise ClassMapError(f"class {name!r}: source id {source_id!r} is not 0..65535")
            if source_id in owner:
                raise ClassMapError(f"source id {source_id} is mapped to both "
                                    f"{owner[source_id]!r} and {name!r}")
            owner[source_id] = name
            table[source_id] = index
        names.append(name)
        color = entry.get("color") or rng.integers(0, 256, 3).tolist()
        colors.append([int(c) for c in color])
    if len(set(names)) != len(names):
        raise ClassMapError(f"class map '{path}' names a class twice: {names}")
    return {"names": names, "colors": colors, "table": table,
            "map": {n: sorted(i for i, o in owner.items() if o == n) for n in names}}


def pairs(images: str, labels: str, image_suffix: str, label_suffix: str
          ) -> List[Tuple[str, str]]:
    """(image, label) paths relative to their folders; ``ClassMapError`` for missing labels."""
    for folder, what in ((images, "--images"), (labels, "--labels")):
        if not os.path.isdir(folder):
            raise ClassMapError(f"{what} folder '{folder}' does not exist")
    found = iter_files(images, image_suffix)
    if not found:
        raise ClassMapError(f"no '*{image_suffix}' image below '{images}' (--image-suffix)")
    result, missing = [], []
    for image in found:
        label = image[:-len(image_suffix)] + label_suffix
        (result if os.path.isfile(os.path.join(labels, label)) else missing).append(
            (image, label))
    if missing:
        shown = ", ".join(label for _, label in missing[:5])
        raise ClassMapError(f"{len(missing)} of {len(found)} images have no label in "
                            f"'{labels}' (looked for e.g. {shown}; --label-suffix)")
    return result


def _run(job: Job) -> Tuple[str, Dict[str, int]]:
    """Map one label (unless its output is already whole) and count its classes."""
    if file_problem(job.output_label) is None:
        mapped = np.asarray(Image.open(job.output_label))
    else:
        source = np.asarray(Image.open(job.source_label))
        if source.ndim != 2:
            raise ClassMapError(f"label '{job.source_label}' has shape {source.shape}: a "
                                f"single-channel PNG of label ids is expected")
        table = np.frombuffer(job.table, dtype=np.uint8)
        mapped = table[source.astype(np.int64)]
        write_png(job.output_label, mapped)
    return job.key, class_pixel_counts(mapped, job.num_classes)


def _check_same_map(output: str, description: Dict) -> None:
    path = os.path.join(output, DESCRIPTION_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = json.load(f)
    if (old.get("classes"), old.get("class_map")) != (description["classes"],
                                                      description["class_map"]):
        raise ClassMapError(f"'{output}' was prepared with another class list or map; delete it "
                            f"or choose another --output")


def prepare_labelled_folder(images: str, labels: str, class_map: str, output: str, *,
                            image_suffix: str = ".png", label_suffix: str = ".png",
                            domain: str = "source", nproc: int = 1,
                            progress: bool = True) -> Dict:
    """Prepare ``output``; returns its ``dataset.json`` content."""
    classes = read_class_map(class_map)
    found = pairs(images, labels, image_suffix, label_suffix)
    items = [{"image": image, "label": os.path.join("labels",
                                                     image[:-len(image_suffix)] + ".png")}
             for image, _ in found]
    description = {"format_version": FORMAT_VERSION, "images": os.path.abspath(images),
                   "classes": classes["names"], "colors": classes["colors"],
                   "class_map": classes["map"], "domain": domain, "items": items}
    _check_same_map(output, description)
    os.makedirs(output, exist_ok=True)
    table = classes["table"].tobytes()
    jobs = [Job(item["label"], os.path.join(labels, label), os.path.join(output, item["label"]),
                table, len(classes["names"])) for (_, label), item in zip(found, items)]
    # Each result names its label: the pool returns them in any order.
    stats = dict(parallel_map(_run, jobs, nproc, os.path.basename(os.path.abspath(output)),
                              progress))
    save_rcs_stats(output, stats, num_classes=len(classes["names"]))
    atomic_write_bytes(os.path.join(output, DESCRIPTION_FILE),
                       (json.dumps(description, indent=1) + "\n").encode())
    return description


def _argument_parser():
    p = prepare_argument_parser(__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of the images (searched recursively)")
    p.add_argument("--labels", required=True, help="folder of the source's label-id PNGs")
    p.add_argument("--class-map", required=True, help="JSON: classes, colours, source ids")
    p.add_argument("--output", required=True, help="the prepared folder to write")
    p.add_argument("--image-suffix", default=".png")
    p.add_argument("--label-suffix", default=".png")
    p.add_argument("--domain", choices=["source", "target"], default="source",
                   help="target: a labelled target split, to evaluate on")
    return p


def _prepare(args) -> Dict:
    return prepare_labelled_folder(args.images, args.labels, args.class_map, args.output,
                                   image_suffix=args.image_suffix,
                                   label_suffix=args.label_suffix, domain=args.domain,
                                   nproc=args.nproc)


def _summary(args, description: Dict) -> str:
    return (f"{args.output}: {len(description['items'])} labelled images, "
            f"{len(description['classes'])} classes ({', '.join(description['classes'])}); "
            f"use it as DATASETS.LABELLED_FOLDERS ['NAME={args.output}']")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_prepare_cli(_argument_parser(), argv, _prepare, _summary,
                           (ClassMapError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
