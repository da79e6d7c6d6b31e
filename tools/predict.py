#!/usr/bin/env python
"""Segment images with a trained model: coloured masks and overlays (Detectron2 Visualizer).

    python tools/predict.py --config-file export/student.yaml --input img.png [dir/ ...] \
        --output predictions/ [KEY VALUE ...]

For every input image (or every image in an input folder, recursively) writes
``<name>_mask.png`` (the class colours) and ``<name>_overlay.png`` (the mask blended over the
image) below ``--output``, at the image's path relative to the inputs' common folder:
``--input frames/`` with ``frames/cam1/0001.png`` and ``frames/cam2/0001.png`` gives
``cam1/0001_*.png`` and ``cam2/0001_*.png``; ``--input a/ b/`` keeps ``a/`` and ``b/``. Images
whose names differ only in the extension keep it (``0001.jpg_mask.png``). An image that cannot
be read is reported (its path and why) and skipped; the exit status is 1 if any was.
The model comes from the config (its ``MODEL.WEIGHTS``); images are resized as
``INPUT.TEST_SIZE`` says and predictions are returned at the image's own size.

A panoptic model (``MODEL.TASK panoptic``) gives, for every image:

- ``<name>_overlay.png``: Detectron2's ``Visualizer.draw_panoptic_seg`` over the image (stuff
  in its class colour, every thing instance in its own jittered colour with its class name;
  void pixels left as the image);
- ``<name>_mask.png``: the class colour of every pixel's segment (void black);
- ``<name>_panoptic.png``: the raw segmentation as a COCO panoptic PNG, the format panopticapi's
  ``pq_compute`` and cityscapesscripts' ``evaluatePanoptic`` read and the one Detectron2's
  ``COCOPanopticEvaluator`` writes: RGB with ``id = R + 256 G + 256^2 B`` (panopticapi's
  ``rgb2id``), ``id = 0`` void and otherwise ``id = train_id * label_divisor + k + 1`` (``k >= 1``
  numbering a thing instance, ``k = 0`` for stuff) -- the model's ids (Detectron2's
  Panoptic-DeepLab encoding, -1 void) plus one, so that void is 0;
- and, for all images together, ``panoptic.json`` in ``--output``: COCO panoptic
  ``annotations`` (``image_id``: the image's output path without ``_panoptic.png``,
  ``file_name``: its PNG relative to ``--output``, ``segments_info``: ``id``, ``category_id``
  as the data set's category ids -- Cityscapes label ids for Cityscapes-style metadata -- and
  ``iscrowd``, ``area``, ``bbox``) and the ``categories``. To re-score with
  ``evaluatePanoptic``, give it this file and ``--output`` as the prediction JSON and folder
  (its image ids must be the ground truth's: name the images as the data set does).

The class names, colours, thing classes and label divisor come from the export's
``student.pth`` (tools/export_student.py writes them there), else from the registered data set
the config names.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.visualizer import ColorMode, Visualizer

from duda_d2 import load_config
from duda_d2.data.datasets import cityscapes_sem_seg_metadata
from duda_d2.data.datasets.image_folders import IMAGE_EXTENSIONS
from duda_d2.data.mappers import build_test_augmentations
from duda_d2.engine import AtomicCheckpointer
from duda_d2.evaluation import write_mask_and_overlay
from duda_d2.modeling.tasks import panoptic_dataset_name
from duda_d2.utils.atomic_files import atomic_write_bytes

# tools/export_student.py writes (and reads) what a panoptic export carries.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_student import read_panoptic_info, with_exported_panoptic_metadata  # noqa: E402

IMAGE_SUFFIXES = IMAGE_EXTENSIONS


def list_images(inputs: List[str]) -> List[str]:
    """Image files named directly or found (recursively, sorted) in the named folders."""
    found = []
    for path in inputs:
        if os.path.isdir(path):
            for root, _, names in sorted(os.walk(path)):
                found += [os.path.join(root, n) for n in sorted(names)
                          if n.lower().endswith(IMAGE_SUFFIXES)]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f"input '{path}' is neither an image nor a folder")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {inputs}")
    return list(dict.fromkeys(os.path.abspath(p) for p in found))  # each image once


def output_stems(images: List[str], inputs: List[str], output: str) -> Dict[str, str]:
    """Image path -> its output path without ``_mask.png``: the image's path relative to the
    folder common to all inputs (a named file counts as its folder), without the extension
    unless another image of that folder has the same name with another one."""
    roots = [os.path.abspath(p if os.path.isdir(p) else os.path.dirname(p) or ".")
             for p in inputs]
    common = os.path.commonpath(roots)
    stems = {path: os.path.splitext(os.path.relpath(path, common))[0] for path in images}
    clashes = {stem for stem, n in Counter(stems.values()).items() if n > 1}
    return {path: os.path.join(output, os.path.relpath(path, common) if stem in clashes
                               else stem) for path, stem in stems.items()}


class Predictor:
    """Model + test-time resize; ``__call__(RGB uint8 HxWx3) -> (H, W) train ids``,
    ``outputs(image)``: the model's whole output for the image (e.g. ``panoptic_seg``)."""

    def __init__(self, cfg):
        self.model = build_model(cfg).eval()
        AtomicCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.augmentations = T.AugmentationList(build_test_augmentations(cfg))
        self.format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def outputs(self, image: np.ndarray) -> dict:
        """``image``: RGB uint8 (H, W, 3); the model's output dict at the image's size."""
        aug = T.AugInput(image[:, :, ::-1] if self.format == "BGR" else image)
        self.augmentations(aug)
        tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        inputs = [{"image": tensor, "height": image.shape[0], "width": image.shape[1]}]
        return self.model(inputs)[0]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image``: RGB uint8 (H, W, 3); returns (H, W) train ids."""
        return self.outputs(image)["sem_seg"].argmax(0).cpu().numpy()

    def panoptic(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int64 panoptic ids of a panoptic model: ``train_id * label_divisor + k``
        (things ``k >= 1``, stuff ``k = 0``), -1 void."""
        return self.outputs(image)["panoptic_seg"][0].cpu().numpy().astype(np.int64)


save_visuals = write_mask_and_overlay  # the files --eval-only writes for unlabelled data too


# ---------------------------------------------------------------------- panoptic results
PANOPTIC_JSON = "panoptic.json"
PANOPTIC_VISUALS = "__duda_predict_panoptic__"


def panoptic_visual_metadata(source):
    """Metadata ``Visualizer.draw_panoptic_seg`` can use with ``segments_info=None``: it
    decodes ``id // label_divisor`` as the class, a thing if it is among
    ``thing_dataset_id_to_contiguous_id``'s values, names stuff by ``stuff_classes`` and things
    by ``thing_classes`` indexed by that class (train id), colours stuff by ``stuff_colors``
    and things by ``thing_colors`` (jittered), and skips -1 (void). Missing thing names or
    colours are the stuff ones (Detectron2's Cityscapes panoptic metadata has all classes in
    both)."""
    values = {k: source.get(k) for k in ("stuff_classes", "stuff_colors", "thing_classes",
                                          "thing_colors", "thing_dataset_id_to_contiguous_id",
                                          "stuff_dataset_id_to_contiguous_id", "label_divisor")
              if source.get(k, None) is not None}
    missing = [k for k in ("stuff_classes", "stuff_colors", "thing_dataset_id_to_contiguous_id",
                           "label_divisor") if k not in values]
    if missing:
        raise ValueError(f"the panoptic metadata of '{source.name}' lacks {missing}: use a "
                         f"panoptic data set (*_panoptic) or a panoptic export")
    classes = values["stuff_classes"]
    if len(values.get("thing_classes", ())) < len(classes):
        values["thing_classes"] = list(classes)
    if len(values.get("thing_colors", ())) < len(classes):
        values["thing_colors"] = list(values["stuff_colors"])
    if PANOPTIC_VISUALS in MetadataCatalog.list():
        MetadataCatalog.remove(PANOPTIC_VISUALS)
    return MetadataCatalog.get(PANOPTIC_VISUALS).set(**values)


class PanopticWriter:
    """Writes each image's panoptic drawing, class mask and COCO panoptic PNG, and at the end
    the COCO panoptic ``panoptic.json`` of all of them (see the module docstring)."""

    def __init__(self, metadata, output: str):
        self.metadata, self.output = metadata, output
        self.divisor = int(metadata.label_divisor)
        self.things = set(metadata.thing_dataset_id_to_contiguous_id.values())
        # Train id -> the data set's category id (things and stuff have their own maps).
        self.category_ids = {v: k for k, v in metadata.get(
            "stuff_dataset_id_to_contiguous_id", {}).items()}
        self.category_ids.update({v: k for k, v in
                                  metadata.thing_dataset_id_to_contiguous_id.items()})
        self.annotations: List[dict] = []

    def category_id(self, train_id: int) -> int:
        """The data set's category id of a train id (the train id itself when the metadata
        maps it nowhere)."""
        return int(self.category_ids.get(train_id, train_id))

    def segments_info(self, ids: np.ndarray) -> List[dict]:
        """COCO ``segments_info`` of the (H, W) PNG ids (0 = void), in increasing id order;
        one sort of the pixels, not one pass over the image per segment."""
        flat = ids.ravel()
        order = np.argsort(flat, kind="stable")
        values, starts, areas = np.unique(flat[order], return_index=True, return_counts=True)
        rows, cols = np.divmod(order, ids.shape[1])
        boxes = [np.minimum.reduceat(cols, starts), np.minimum.reduceat(rows, starts),
                 np.maximum.reduceat(cols, starts), np.maximum.reduceat(rows, starts)]
        segments = []
        for i, sid in enumerate(values.tolist()):
            if sid == 0:
                continue
            x0, y0, x1, y1 = (int(b[i]) for b in boxes)
            segments.append({"id": sid,
                             "category_id": self.category_id((sid - 1) // self.divisor),
                             "iscrowd": 0, "area": int(areas[i]),
                             "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1]})
        return segments

    def save(self, image: np.ndarray, panoptic: np.ndarray, stem: str) -> None:
        from panopticapi.utils import id2rgb

        colours = np.array(self.metadata.stuff_colors, dtype=np.uint8)
        mask = np.zeros((*panoptic.shape, 3), dtype=np.uint8)
        labelled = panoptic >= 0
        mask[labelled] = colours[np.clip(panoptic[labelled] // self.divisor, 0,
                                         len(colours) - 1)]
        Image.fromarray(mask).save(f"{stem}_mask.png")
        overlay = Visualizer(image, self.metadata, instance_mode=ColorMode.IMAGE)
        overlay.draw_panoptic_seg(torch.as_tensor(panoptic), None, alpha=0.5).save(
            f"{stem}_overlay.png")
        ids = panoptic + 1  # void (-1) -> 0, as COCO panoptic files have it
        Image.fromarray(id2rgb(ids)).save(f"{stem}_panoptic.png")
        self.annotations.append({"image_id": os.path.relpath(stem, self.output),
                                 "file_name": os.path.relpath(f"{stem}_panoptic.png",
                                                              self.output),
                                 "segments_info": self.segments_info(ids)})

    def finish(self) -> str:
        """Write ``panoptic.json``; returns its path."""
        colours = self.metadata.stuff_colors
        categories = [{"id": self.category_id(i), "name": name, "isthing": int(i in self.things),
                       "color": list(colours[i])}
                      for i, name in enumerate(self.metadata.stuff_classes)]
        path = os.path.join(self.output, PANOPTIC_JSON)
        content = {"annotations": self.annotations, "categories": categories}
        atomic_write_bytes(path, json.dumps(content).encode())
        return path


def panoptic_setup(cfg):
    """(config to build the model with, metadata to draw with) of a panoptic model: the
    metadata its exported ``student.pth`` carries, else the registered data set's."""
    cfg = with_exported_panoptic_metadata(cfg, read_panoptic_info(cfg.MODEL.WEIGHTS))
    return cfg, MetadataCatalog.get(panoptic_dataset_name(cfg))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="images and/or folders")
    parser.add_argument("--output", required=True)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        parser.error("the config has no MODEL.WEIGHTS: pass MODEL.WEIGHTS path/to/model.pth")
    images = list_images(args.input)
    writer: Optional[PanopticWriter] = None
    if cfg.MODEL.TASK == "panoptic":
        cfg, source = panoptic_setup(cfg)
        predictor = Predictor(cfg)  # builds the task, which checks the metadata first
        writer = PanopticWriter(panoptic_visual_metadata(source), args.output)
    else:
        predictor = Predictor(cfg)
        metadata = MetadataCatalog.get("__duda_predict__")
        if not hasattr(metadata, "stuff_classes"):
            metadata.set(**cityscapes_sem_seg_metadata())
    failed = []
    for path, stem in tqdm(output_stems(images, args.input, args.output).items(),
                           desc="predict", unit="img"):
        try:
            image = utils.read_image(path, format="RGB")
        except Exception as error:  # empty, truncated, not an image, unreadable
            tqdm.write(f"skipped {path}: cannot read the image ({type(error).__name__}: "
                       f"{error})", file=sys.stderr)
            failed.append(path)
            continue
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        if writer is not None:
            writer.save(image, predictor.panoptic(image), stem)
        else:
            save_visuals(image, predictor(image), metadata, stem)
    if writer is not None:
        writer.finish()
    print(f"{len(images) - len(failed)} images -> {args.output}"
          + (f"; {len(failed)} failed (not readable, listed above)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
