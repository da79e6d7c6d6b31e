"""Panoptic evaluation: PQ, SQ and RQ (all / things / stuff), per-class PQ and the mean PQ of
the benchmark's class subsets (``mPQ16`` for SYNTHIA->Cityscapes), scored by cityscapesscripts'
``evaluatePanoptic`` on predictions written in the COCO/Cityscapes panoptic format.

The model gives, per image, Detectron2 Panoptic-DeepLab's label map (``train_id *
label_divisor + k`` for thing instances, ``train_id * label_divisor`` for stuff, -1 for void).
Each image becomes an RGB id PNG (panopticapi's ``id2rgb``; void = id 0) and an annotation
whose ``category_id`` is the data set's own category id (the Cityscapes label id), mapped back
from the contiguous train id through the metadata's ``thing/stuff_dataset_id_to_contiguous_id``.
The main process writes, under ``<output_dir>/panoptic/``::

    predictions/<the ground truth's PNG name>   one PNG per image
    predictions.json                            {"images", "categories", "annotations"}
    resultPanopticSemanticLabeling.json         cityscapesscripts' own results file

so ``python -m cityscapesscripts.evaluation.evalPanopticSemanticLabeling --gt-json-file
<panoptic_json> --gt-folder <panoptic_root> --prediction-json-file .../predictions.json``
(and panopticapi's ``pq_compute``) re-score them. The folder belongs to the run: evaluating
the run again (``--eval-only``, or the next periodic evaluation) rewrites its predictions; the
JSON is removed first and written last, so a JSON present always describes a complete set of
PNGs. Without ``output_dir`` everything goes to a temporary folder that is deleted afterwards.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.datasets.layout import DatasetNotFoundError
from ..utils.atomic_files import atomic_write_bytes
from .class_subsets import dataset_class_subsets, subset_mean, subset_metric_name

__all__ = ["PANOPTIC_EVALUATOR_TYPES", "UDAPanopticEvaluator", "label_map_to_segments"]

PANOPTIC_EVALUATOR_TYPES = ("cityscapes_panoptic_seg",)
RESULTS_FILE = "resultPanopticSemanticLabeling.json"  # cityscapesscripts' default name
VOID = -1  # void in the model's label map
logger = logging.getLogger(__name__)


def label_map_to_segments(pan: np.ndarray, label_divisor: int,
                          contiguous_to_dataset_id: Mapping[int, int],
                          thing_contiguous_ids: Set[int]) -> Tuple[np.ndarray, List[dict]]:
    """Segment ids (uint32, 0 = void, segments numbered 1.. in increasing label order) and the
    COCO ``segments_info`` of a Panoptic-DeepLab label map.

    ``category_id`` is the data set's category id of the contiguous id ``label //
    label_divisor``; ``isthing`` comes from the metadata (a thing class predicted without an
    instance, k = 0, is still a thing segment). A label of an unknown class is an error.
    """
    values, inverse, counts = np.unique(pan, return_inverse=True, return_counts=True)
    segment_of_value = np.zeros(len(values), np.uint32)
    segments = []
    for index, (value, count) in enumerate(zip(values.tolist(), counts.tolist())):
        if value == VOID:
            continue
        contiguous = value // label_divisor if value >= 0 else None
        if contiguous not in contiguous_to_dataset_id:
            raise ValueError(
                f"the panoptic prediction holds label {value}, which is neither void ({VOID}) "
                f"nor class * {label_divisor} + instance for a class of the data set (contiguous "
                f"ids {sorted(contiguous_to_dataset_id)}): the model's classes or its "
                f"label_divisor differ from the data set's metadata")
        segment_of_value[index] = len(segments) + 1
        segments.append({"id": len(segments) + 1,
                         "category_id": int(contiguous_to_dataset_id[contiguous]),
                         "isthing": contiguous in thing_contiguous_ids,
                         "area": int(count)})
    return segment_of_value[inverse.reshape(pan.shape)], segments


def _encode_png(segment_ids: np.ndarray) -> bytes:
    from panopticapi.utils import id2rgb

    buffer = io.BytesIO()
    Image.fromarray(id2rgb(segment_ids)).save(buffer, format="PNG")
    return buffer.getvalue()


class UDAPanopticEvaluator(DatasetEvaluator):
    """PQ/SQ/RQ of a panoptic data set (metadata ``evaluator_type`` in
    ``PANOPTIC_EVALUATOR_TYPES``, with ``panoptic_json``, ``panoptic_root``, ``label_divisor``,
    ``thing/stuff_dataset_id_to_contiguous_id`` and ``stuff_classes``).

    ``evaluate()`` returns ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th",
    "PQ_st", "SQ_st", "RQ_st", "PQ-<class>" for every class, "mPQ<k>" per class subset}}`` in
    percent (Detectron2's COCOPanopticEvaluator's names). A class neither in the ground truth
    (non-crowd) nor predicted has a NaN PQ and is left out of the subset means;
    cityscapesscripts leaves out the classes without TP, FP or FN, the same set unless every
    segment predicted for a class lies mostly on void or crowd pixels.

    ``class_subsets`` adds subsets (``{"mIoU16": [train ids]}``, the semantic evaluator's
    names) to the data set's ``eval_class_subsets``; each is reported as ``mPQ<suffix>``.
    """

    def __init__(self, dataset_name: str, distributed: bool = True,
                 output_dir: Optional[str] = None,
                 class_subsets: Optional[Mapping[str, List[int]]] = None):
        meta = MetadataCatalog.get(dataset_name)
        missing = [key for key in ("panoptic_json", "panoptic_root", "label_divisor",
                                   "thing_dataset_id_to_contiguous_id",
                                   "stuff_dataset_id_to_contiguous_id", "stuff_classes")
                   if not hasattr(meta, key)]
        if missing:
            raise ValueError(f"{dataset_name} has no panoptic metadata {missing}: register it "
                             f"as a panoptic data set (datasets/README.md)")
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._gt_json = meta.panoptic_json
        self._gt_folder = meta.panoptic_root
        self._label_divisor = int(meta.label_divisor)
        self._class_names = list(meta.stuff_classes)
        things = dict(meta.thing_dataset_id_to_contiguous_id)
        stuff = dict(meta.stuff_dataset_id_to_contiguous_id)
        self._to_dataset_id = {int(c): int(d) for d, c in {**stuff, **things}.items()}
        self._thing_ids = {int(c) for c in things.values()}
        self._class_subsets = dataset_class_subsets(meta, class_subsets)
        self._read_ground_truth(things)
        self._predictions: List[dict] = []

    def _read_ground_truth(self, things: Mapping[int, int]) -> None:
        """From ``panoptic_json``, checked against the metadata (every class known, things
        agreeing): ``_gt_files`` {image_id: GT PNG name}, ``_categories``, ``_images`` and
        ``_gt_categories`` (the category ids of its non-crowd segments)."""
        if not os.path.isfile(self._gt_json):
            raise DatasetNotFoundError(
                f"panoptic ground truth of {self._dataset_name} not found: panoptic_json "
                f"'{self._gt_json}' is not a file. Prepare the data set's panoptic labels "
                f"(datasets/README.md; Cityscapes: cityscapesscripts' createPanopticImgs)")
        if not os.path.isdir(self._gt_folder):
            raise DatasetNotFoundError(
                f"panoptic ground truth of {self._dataset_name} not found: panoptic_root "
                f"'{self._gt_folder}' is not a folder (it holds the PNGs of panoptic_json)")
        with open(self._gt_json) as f:
            gt = json.load(f)
        categories = {c["id"]: c for c in gt.get("categories", [])}
        unknown = sorted(set(self._to_dataset_id.values()) - set(categories))
        if unknown:
            raise ValueError(f"the metadata of {self._dataset_name} maps classes to category "
                             f"ids {unknown} that '{self._gt_json}' does not list")
        disagree = sorted(d for d in self._to_dataset_id.values()
                          if bool(categories[d].get("isthing")) != (d in things))
        if disagree:
            raise ValueError(f"'{self._gt_json}' and the metadata of {self._dataset_name} "
                             f"disagree on which categories are things: {disagree}")
        self._gt_files: Dict[object, str] = {
            a["image_id"]: os.path.basename(a["file_name"]) for a in gt["annotations"]}
        self._categories = list(categories.values())
        self._images = list(gt.get("images", []))
        self._gt_categories = {s["category_id"] for a in gt["annotations"]
                               for s in a["segments_info"] if not s.get("iscrowd", 0)}

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            pan, segments_info = out["panoptic_seg"]
            if segments_info is not None:
                raise ValueError("UDAPanopticEvaluator expects Panoptic-DeepLab's label map "
                                 "(panoptic_seg = (label map, None)), got segments_info")
            image_id = inp["image_id"]
            if image_id not in self._gt_files:
                raise ValueError(f"image_id {image_id!r} of '{inp.get('file_name')}' is not in "
                                 f"'{self._gt_json}': the records and panoptic_json of "
                                 f"{self._dataset_name} disagree")
            pan = pan.to("cpu").numpy() if hasattr(pan, "numpy") else np.asarray(pan)
            expected = (inp.get("height"), inp.get("width"))
            if None not in expected and tuple(pan.shape) != expected:
                raise ValueError(f"panoptic prediction {tuple(pan.shape)} of "
                                 f"'{inp.get('file_name')}' is not the image's size {expected}")
            ids, segments = label_map_to_segments(pan.astype(np.int64), self._label_divisor,
                                                  self._to_dataset_id, self._thing_ids)
            self._predictions.append({"image_id": image_id,
                                      "file_name": self._gt_files[image_id],
                                      "segments_info": segments, "png": _encode_png(ids)})

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return None
        if not predictions:
            logger.warning(f"{self._dataset_name}: no panoptic predictions to evaluate")
            return {}
        by_image = {p["image_id"]: p for p in predictions}
        missing = [i for i in self._gt_files if i not in by_image]
        if missing:
            raise ValueError(f"{len(missing)} image(s) of '{self._gt_json}' got no prediction "
                             f"(e.g. {missing[:3]}): PQ over a part of {self._dataset_name} "
                             f"would not be comparable; evaluate on all its images")
        ordered = [by_image[i] for i in self._gt_files]
        if self._output_dir:
            return self._write_and_score(ordered, os.path.join(self._output_dir, "panoptic"))
        with tempfile.TemporaryDirectory(prefix="panoptic_eval_") as tmp:
            return self._write_and_score(ordered, tmp)

    def _write_and_score(self, predictions: List[dict], folder: str) -> "OrderedDict":
        """Write the PNGs and the JSON under ``folder``, score them, return the metrics."""
        pred_json = os.path.join(folder, "predictions.json")
        pred_folder = os.path.join(folder, "predictions")
        staging = os.path.join(folder, ".predictions_being_written")
        os.makedirs(folder, exist_ok=True)
        for stale in (pred_json, os.path.join(folder, RESULTS_FILE)):
            if os.path.exists(stale):
                os.remove(stale)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        for p in predictions:
            with open(os.path.join(staging, p["file_name"]), "wb") as f:
                f.write(p["png"])
        if os.path.isdir(pred_folder):
            logger.info(f"rewriting the panoptic predictions of an earlier evaluation in "
                        f"{pred_folder}")
            shutil.rmtree(pred_folder)
        os.replace(staging, pred_folder)
        annotations = [{k: p[k] for k in ("image_id", "file_name", "segments_info")}
                       for p in predictions]
        content = {"images": self._images, "categories": self._categories,
                   "annotations": annotations}
        atomic_write_bytes(pred_json, json.dumps(content).encode())
        results = self._score(pred_json, pred_folder, os.path.join(folder, RESULTS_FILE))
        metrics = self._metrics(results, predictions)
        if self._output_dir:
            atomic_write_bytes(os.path.join(self._output_dir, "panoptic_evaluation.json"),
                               json.dumps(metrics, indent=1).encode())
        return OrderedDict({"panoptic_seg": metrics})

    def _score(self, pred_json: str, pred_folder: str, results_file: str) -> dict:
        """cityscapesscripts' ``evaluatePanoptic`` (a pool of ``os.cpu_count()`` processes);
        what it prints goes to the log."""
        from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                results = evaluatePanoptic(self._gt_json, self._gt_folder, pred_json,
                                           pred_folder, results_file)
        except ZeroDivisionError as e:
            raise ValueError(
                f"cityscapesscripts cannot average PQ over {self._dataset_name}: its ground "
                f"truth and the predictions hold no thing segment, or no stuff segment, at "
                f"all (evaluatePanoptic divides by the number of such classes)") from e
        finally:
            logger.info("cityscapesscripts evaluatePanoptic:\n" + printed.getvalue())
        return results

    def _metrics(self, results: dict, predictions: List[dict]) -> Dict[str, float]:
        metrics: Dict[str, float] = {}
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for key in ("pq", "sq", "rq"):
                metrics[key.upper() + suffix] = 100.0 * float(results[group][key])
        present = self._gt_categories | {s["category_id"] for p in predictions
                                         for s in p["segments_info"]}
        per_class = results["per_class"]
        for contiguous, name in enumerate(self._class_names):
            dataset_id = self._to_dataset_id.get(contiguous)
            value = per_class.get(dataset_id)  # keyed by category id
            metrics[f"PQ-{name}"] = (100.0 * float(value["pq"])
                                     if value is not None and dataset_id in present
                                     else math.nan)
        for subset, class_ids in self._class_subsets.items():
            metrics[subset_metric_name(subset, "PQ")] = subset_mean(
                metrics, "PQ", self._class_names, class_ids)
        return metrics
