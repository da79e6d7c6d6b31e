"""Label-free checkpoint signals (issue 19): logged every ``TEST.EVAL_PERIOD`` next to the
target scores, and computed for finished runs by ``tools/label_free_signals.py``.

On the first ``TEST.LABEL_FREE_IMAGES`` images of ``DATASETS.TARGET_TRAIN`` (unlabelled, as
training sees them, at the test size): the teacher's confidence, the share of confident
(pseudo-labelled) pixels, the evaluated network's confidence and its agreement with the teacher
(``duda_d2.uda.label_free``); and, when ``DATASETS.SOURCE_VAL`` names a labelled source split,
the evaluated network's mIoU there. None of them reads a target label.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.engine import HookBase
from detectron2.evaluation import inference_on_dataset

from ..data.mappers import SemSegDatasetMapper
from ..evaluation import UDASemSegEvaluator
from ..uda.label_free import LabelFreeTally, label_free_sums

__all__ = ["self_training_pair", "label_free_signals", "LabelFreeSignalsHook"]

logger = logging.getLogger(__name__)


def self_training_pair(model):
    """The student/EMA-teacher pair whose teacher makes the pseudo-labels (DUDA: the large
    pair), or None for a model without one (source-only)."""
    for name in ("large_pair", "pair"):
        pair = getattr(model, name, None)
        if pair is not None:
            return pair
    return None


@torch.no_grad()
def label_free_signals(cfg, model, max_images: Optional[int] = None) -> Dict[str, float]:
    """The signals of ``model`` now (see the module docstring); the target ones need a teacher
    (source-only models get the source-val mIoU only)."""
    pair = self_training_pair(model)
    max_images = cfg.TEST.LABEL_FREE_IMAGES if max_images is None else max_images
    was_training = model.training
    model.eval()
    signals: Dict[str, float] = {}
    try:
        if pair is not None and cfg.DATASETS.TARGET_TRAIN and max_images > 0:
            signals.update(_target_signals(cfg, model, pair, max_images))
        for name in cfg.DATASETS.SOURCE_VAL:
            loader = build_detection_test_loader(
                cfg, name, mapper=SemSegDatasetMapper(cfg, is_train=False, with_labels=False))
            results = inference_on_dataset(model, loader,
                                           UDASemSegEvaluator(name, distributed=True))
            signals[f"source_val_mIoU/{name}"] = results["sem_seg"]["mIoU"]
    finally:
        model.train(was_training)
    return signals


def _target_signals(cfg, model, pair, max_images: int) -> Dict[str, float]:
    records = DatasetCatalog.get(cfg.DATASETS.TARGET_TRAIN[0])[:max_images]
    loader = build_detection_test_loader(
        records, mapper=SemSegDatasetMapper(cfg, is_train=False, with_labels=False))
    network = model.inference_network()
    tally = LabelFreeTally()
    for batch in loader:  # one image per batch: no padding enters the statistics
        images = model.images(batch, network.size_divisibility).tensor
        teacher = pair.teacher_outputs(images)["sem_seg"]
        evaluated = model.inference_settings(network, images)["sem_seg"]
        tally.add(label_free_sums(teacher, evaluated, pair.settings.pseudo_labels.threshold))
    return tally.means()


class LabelFreeSignalsHook(HookBase):
    """Puts ``label_free/<signal>`` scalars every ``period`` iterations and after the last."""

    def __init__(self, cfg, period: int):
        self.cfg = cfg
        self.period = period

    def _log(self) -> None:
        signals = label_free_signals(self.cfg, self.trainer.model)
        if signals:
            self.trainer.storage.put_scalars(
                **{f"label_free/{k}": v for k, v in signals.items()}, smoothing_hint=False)
            logger.info("label-free signals: " + ", ".join(f"{k} {v:.4f}"
                                                           for k, v in signals.items()))

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 \
                and next_iter != self.trainer.max_iter:
            self._log()

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._log()
