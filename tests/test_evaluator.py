import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from duda_d2.data.datasets import cityscapes_sem_seg_metadata
from duda_d2.data.datasets.cityscapes_classes import SYNTHIA_13_CLASSES, SYNTHIA_16_CLASSES
from duda_d2.data.labels import InvalidLabelError
from duda_d2.evaluation import UDASemSegEvaluator


@pytest.fixture
def two_image_dataset(tmp_path):
    """Two 2x2 label maps registered as a dataset; returns (name, labels)."""
    labels = [np.array([[0, 0], [1, 255]], np.uint8), np.array([[1, 1], [2, 2]], np.uint8)]
    records = []
    for i, lab in enumerate(labels):
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(lab).save(path)
        records.append({"file_name": f"img{i}.png", "sem_seg_file_name": path})
    name = f"eval_test_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(**cityscapes_sem_seg_metadata(
        eval_class_subsets={"mIoU16": SYNTHIA_16_CLASSES, "mIoU13": SYNTHIA_13_CLASSES}))
    yield name, labels
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _logits(pred):
    out = torch.zeros(19, *pred.shape)
    out.scatter_(0, torch.as_tensor(pred)[None].long(), 1.0)
    return {"sem_seg": out}


def test_miou_matches_hand_computation(two_image_dataset, tmp_path):
    name, _ = two_image_dataset
    evaluator = UDASemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    preds = [np.array([[0, 1], [1, 5]]), np.array([[1, 1], [2, 0]])]
    evaluator.process([{"file_name": "img0.png"}, {"file_name": "img1.png"}],
                      [_logits(p) for p in preds])
    res = evaluator.evaluate()["sem_seg"]
    # road: tp 1, gt 2, pred 2 -> 1/3; sidewalk: tp 3, gt 3, pred 4 -> 3/4; building: 1/2.
    # The ignored pixel (predicted pole) counts nowhere; absent classes are NaN.
    assert res["IoU-road"] == pytest.approx(100 / 3)
    assert res["IoU-sidewalk"] == pytest.approx(75.0)
    assert res["IoU-building"] == pytest.approx(50.0)
    assert math.isnan(res["IoU-pole"])
    assert res["mIoU"] == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)
    # SYNTHIA subsets: the same three classes are in both subsets here.
    assert res["mIoU16"] == pytest.approx(res["mIoU"])
    assert res["mIoU13"] == pytest.approx(res["mIoU"])
    assert os.path.isfile(tmp_path / "out" / "sem_seg_evaluation.json")


def test_subsets_leave_out_their_classes(two_image_dataset):
    name, _ = two_image_dataset
    evaluator = UDASemSegEvaluator(name, distributed=False)
    evaluator.reset()
    # Everything predicted as terrain (9): terrain has no GT, so it stays NaN in the mean.
    preds = [np.full((2, 2), 9), np.array([[1, 1], [2, 2]])]
    evaluator.process([{"file_name": "img0.png"}, {"file_name": "img1.png"}],
                      [_logits(p) for p in preds])
    res = evaluator.evaluate()["sem_seg"]
    assert res["IoU-road"] == 0.0
    assert res["mIoU16"] == pytest.approx(res["mIoU"])
    assert 9 not in SYNTHIA_16_CLASSES and 5 not in SYNTHIA_13_CLASSES
    assert len(SYNTHIA_16_CLASSES) == 16 and len(SYNTHIA_13_CLASSES) == 13


def test_bad_label_values_name_the_file(two_image_dataset, tmp_path):
    name, _ = two_image_dataset
    Image.fromarray(np.array([[0, 33], [1, 2]], np.uint8)).save(tmp_path / "0.png")
    evaluator = UDASemSegEvaluator(name, distributed=False)
    evaluator.reset()
    with pytest.raises(InvalidLabelError, match=r"0\.png.*\[33\]"):
        evaluator.process([{"file_name": "img0.png"}], [_logits(np.zeros((2, 2), int))])


def test_trainer_adds_the_subsets_of_the_training_sets(two_image_dataset, tmp_path):
    from duda_d2.engine import UDATrainer
    from helpers import config

    name, _ = two_image_dataset
    source = name + "_source"
    MetadataCatalog.get(source).set(eval_class_subsets={"mIoU2": [0, 1]})
    try:
        cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "DATASETS.SOURCE_TRAIN", (source,))
        evaluator = UDATrainer.build_evaluator(cfg, name, output_folder=str(tmp_path))
        evaluator.reset()
        preds = [np.array([[0, 1], [1, 5]]), np.array([[1, 1], [2, 0]])]
        evaluator._distributed = False
        evaluator.process([{"file_name": "img0.png"}, {"file_name": "img1.png"}],
                          [_logits(p) for p in preds])
        res = evaluator.evaluate()["sem_seg"]
        assert res["mIoU2"] == pytest.approx(100 * (1 / 3 + 3 / 4) / 2)
    finally:
        MetadataCatalog.remove(source)
