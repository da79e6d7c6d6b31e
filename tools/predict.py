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
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from typing import Dict, List

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
from duda_d2.data.mappers import build_test_augmentations
from duda_d2.engine import AtomicCheckpointer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


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
    """Model + test-time resize; ``__call__(RGB uint8 HxWx3) -> (H, W) train ids``."""

    def __init__(self, cfg):
        self.model = build_model(cfg).eval()
        AtomicCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.augmentations = T.AugmentationList(build_test_augmentations(cfg))
        self.format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image``: RGB uint8 (H, W, 3); returns (H, W) train ids."""
        aug = T.AugInput(image[:, :, ::-1] if self.format == "BGR" else image)
        self.augmentations(aug)
        tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        inputs = [{"image": tensor, "height": image.shape[0], "width": image.shape[1]}]
        return self.model(inputs)[0]["sem_seg"].argmax(0).cpu().numpy()


def save_visuals(image: np.ndarray, labels: np.ndarray, metadata, stem: str) -> None:
    colours = np.array(metadata.stuff_colors, dtype=np.uint8)
    mask = colours[np.clip(labels, 0, len(colours) - 1)]
    Image.fromarray(mask).save(f"{stem}_mask.png")
    overlay = Visualizer(image, metadata, instance_mode=ColorMode.IMAGE)
    overlay.draw_sem_seg(labels, alpha=0.5).save(f"{stem}_overlay.png")


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
        save_visuals(image, predictor(image), metadata, stem)
    print(f"{len(images) - len(failed)} images -> {args.output}"
          + (f"; {len(failed)} failed (not readable, listed above)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
