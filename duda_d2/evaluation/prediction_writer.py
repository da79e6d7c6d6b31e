"""``--eval-only`` on a data set without labels: predictions written as files instead of scores.

Two layouts, chosen by the data set's metadata:

* **Your own images** (``DATASETS.IMAGE_FOLDERS``, any unlabelled split): for every image,
  ``<output>/predictions/<image_id>_mask.png`` (class colours) and ``<image_id>_overlay.png``
  (the mask over the image, Detectron2's ``Visualizer``), as ``tools/predict.py`` writes them.
* **A benchmark's test split** (metadata ``submission``: ACDC, Dark Zurich): one PNG per image
  named as the image (``GOPR0475_frame_000041_rgb_anon.png``), flat in
  ``<output>/submission/``, holding train ids (``TEST.SUBMISSION_LABEL_IDS True``: Cityscapes
  label ids) as an 8-bit palette image with the class colours, then the whole folder zipped to
  ``<output>/submission_<data set>.zip``. This is the format of DAFormer/HRDA/MIC's
  ``tools/test.py --format-only --eval-option imgfile_prefix=labelTrainIds
  to_label_id=False``, which produced their published ACDC and Dark Zurich test-server numbers.

With several processes each writes its own images; the main process writes the archive after
all have finished. Returns no metrics.
"""
from __future__ import annotations

import os
import zipfile
from typing import Dict, List

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["PredictionWriter", "write_mask_and_overlay", "train_ids_to_label_ids"]


def write_mask_and_overlay(image: np.ndarray, labels: np.ndarray, metadata, stem: str) -> None:
    """``<stem>_mask.png`` (class colours) and ``<stem>_overlay.png`` for RGB ``image``."""
    colours = np.array(metadata.stuff_colors, dtype=np.uint8)
    mask = colours[np.clip(labels, 0, len(colours) - 1)]
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    Image.fromarray(mask).save(f"{stem}_mask.png")
    overlay = Visualizer(image, metadata, instance_mode=ColorMode.IMAGE)
    overlay.draw_sem_seg(labels, alpha=0.5).save(f"{stem}_overlay.png")


def train_ids_to_label_ids(labels: np.ndarray) -> np.ndarray:
    """Cityscapes train ids (0..18) to label ids (7..33), cityscapesscripts' table."""
    from cityscapesscripts.helpers.labels import trainId2label

    table = np.zeros(256, dtype=np.uint8)
    for train_id, label in trainId2label.items():
        if 0 <= train_id < 255:
            table[train_id] = label.id
    return table[labels]


def _palette_png(labels: np.ndarray, colours: List) -> Image.Image:
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(colours)] = np.array(colours, dtype=np.uint8)
    image.putpalette(palette.flatten().tolist())
    return image


class PredictionWriter(DatasetEvaluator):
    """Writes the predictions of an unlabelled data set (see the module docstring)."""

    def __init__(self, dataset_name: str, output_dir: str, *, label_ids: bool = False):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.metadata = MetadataCatalog.get(dataset_name)
        self.submission = getattr(self.metadata, "submission", None)
        self.label_ids = label_ids
        self._written: List[str] = []

    def reset(self) -> None:
        self._written = []

    def process(self, inputs, outputs) -> None:
        for record, output in zip(inputs, outputs):
            labels = output["sem_seg"].argmax(0).cpu().numpy().astype(np.uint8)
            if self.submission:
                self._written.append(self._write_submission_png(record, labels))
            else:
                stem = os.path.join(self.output_dir, "predictions", str(record["image_id"]))
                image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
                write_mask_and_overlay(image, labels, self.metadata, stem)
                self._written.append(f"{stem}_mask.png")

    def _write_submission_png(self, record: Dict, labels: np.ndarray) -> str:
        folder = os.path.join(self.output_dir, "submission")
        os.makedirs(folder, exist_ok=True)
        name = os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
        path = os.path.join(folder, name)
        if self.label_ids:
            from cityscapesscripts.helpers.labels import id2label

            colours = [id2label[i].color if i in id2label else (0, 0, 0) for i in range(256)]
            image = _palette_png(train_ids_to_label_ids(labels), colours)
        else:
            image = _palette_png(labels, list(self.metadata.stuff_colors))
        atomic_write_bytes(path, lambda f: image.save(f, format="PNG"))
        return path

    def evaluate(self) -> Dict:
        written = [p for part in comm.gather(self._written, dst=0) for p in part]
        comm.synchronize()
        if not comm.is_main_process():
            return {}
        if self.submission:
            archive = os.path.join(self.output_dir, f"submission_{self.dataset_name}.zip")

            def write(f):
                with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                    for path in sorted(written):
                        z.write(path, arcname=os.path.basename(path))

            atomic_write_bytes(archive, write)
            print(f"{len(written)} predictions of {self.dataset_name} for the "
                  f"{self.submission} test server: {archive}")
        else:
            print(f"{len(written)} predictions and overlays of {self.dataset_name} (no labels, "
                  f"no scores): {os.path.join(self.output_dir, 'predictions')}")
        return {}
