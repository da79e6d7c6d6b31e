"""The panoptic evaluator against hand-computed PQ/SQ/RQ on a tiny two-image data set in the
Cityscapes panoptic format (createPanopticImgs: label ids as category ids, stuff segment id =
label id, thing segment id = label id * 1000 + instance)."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from cityscapesscripts.helpers.labels import labels as CS_LABELS
from duda_d2.data.datasets import cityscapes_sem_seg_metadata
from duda_d2.data.datasets.cityscapes_classes import SYNTHIA_16_CLASSES
from duda_d2.evaluation import UDAPanopticEvaluator, label_map_to_segments

H, W = 32, 48
ROAD, BUILDING, VEGETATION, TERRAIN, CAR = 7, 11, 21, 22, 26  # Cityscapes label ids
TRAIN_ID = {l.id: l.trainId for l in CS_LABELS}
EVAL_LABELS = [l for l in CS_LABELS if not l.ignoreInEval]


def _gt_maps():
    """Two label-id maps with segment ids as createPanopticImgs writes them (0 = void)."""
    a = np.zeros((H, W), np.int64)
    a[0:16] = BUILDING                       # 768 px
    a[16:30] = ROAD                          # 672 px - the two cars = 480 px
    a[18:26, 4:16] = CAR * 1000 + 1          # 96 px
    a[18:26, 28:40] = CAR * 1000 + 2         # 96 px
    # rows 30..31 stay void (96 px)
    b = np.zeros((H, W), np.int64)
    b[0:12] = VEGETATION                     # 576 px
    b[12:] = ROAD                            # 960 px
    return [a, b]


def _id2rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def _train_ids(segment_ids):
    label = np.where(segment_ids >= 1000, segment_ids // 1000, segment_ids)
    out = np.full(label.shape, 255, np.uint8)
    for label_id, train_id in TRAIN_ID.items():
        if 0 <= train_id < 255:
            out[label == label_id] = train_id
    return out


def _panoptic_metadata(root):
    things = {l.id: l.trainId for l in EVAL_LABELS if l.hasInstances}
    stuff = {l.id: l.trainId for l in EVAL_LABELS if not l.hasInstances}
    meta = cityscapes_sem_seg_metadata(
        thing_classes=cityscapes_sem_seg_metadata()["stuff_classes"],
        thing_dataset_id_to_contiguous_id=things, stuff_dataset_id_to_contiguous_id=stuff,
        label_divisor=1000, panoptic_root=os.path.join(root, "panoptic"),
        panoptic_json=os.path.join(root, "panoptic.json"),
        evaluator_type="cityscapes_panoptic_seg")
    meta["thing_colors"] = meta["stuff_colors"]
    return meta


@pytest.fixture
def panoptic_dataset(tmp_path):
    """The two images registered under a unique name; yields (name, root)."""
    root = str(tmp_path / "gt")
    os.makedirs(os.path.join(root, "panoptic"))
    images, annotations, records = [], [], []
    for i, seg in enumerate(_gt_maps()):
        image_id = f"city_{i:06d}_000019"
        png = f"{image_id}_gtFine_panoptic.png"
        Image.fromarray(_id2rgb(seg)).save(os.path.join(root, "panoptic", png))
        sem_path = os.path.join(root, f"{image_id}_labelTrainIds.png")
        Image.fromarray(_train_ids(seg)).save(sem_path)
        segments = []
        for sid in np.unique(seg[seg > 0]).tolist():
            ys, xs = np.nonzero(seg == sid)
            segments.append({"id": sid, "category_id": sid // 1000 if sid >= 1000 else sid,
                             "area": int(len(ys)), "iscrowd": 0,
                             "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                      int(np.ptp(ys)) + 1]})
        images.append({"id": image_id, "width": W, "height": H,
                       "file_name": f"{image_id}_leftImg8bit.png"})
        annotations.append({"image_id": image_id, "file_name": png, "segments_info": segments})
        records.append({"file_name": os.path.join(root, f"{image_id}_leftImg8bit.png"),
                        "image_id": image_id, "height": H, "width": W,
                        "sem_seg_file_name": sem_path,
                        "pan_seg_file_name": os.path.join(root, "panoptic", png)})
    categories = [{"id": l.id, "name": l.name, "color": list(l.color),
                   "supercategory": l.category, "isthing": int(l.hasInstances)}
                  for l in EVAL_LABELS]
    with open(os.path.join(root, "panoptic.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    name = f"panoptic_eval_test_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(**_panoptic_metadata(root))
    yield name, root
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _model_output(segment_ids):
    """Panoptic-DeepLab's encoding of a createPanopticImgs map: train id * 1000 (+ k for
    things), -1 for void; plus one-hot semantic logits."""
    train = _train_ids(segment_ids).astype(np.int64)
    pan = np.where(train == 255, -1, train * 1000 + np.where(segment_ids >= 1000,
                                                            segment_ids % 1000, 0))
    logits = torch.zeros(19, H, W)
    logits.scatter_(0, torch.as_tensor(np.where(train == 255, 0, train))[None], 1.0)
    return {"panoptic_seg": (torch.as_tensor(pan), None), "sem_seg": logits}


def _inputs(name):
    return [{k: r[k] for k in ("file_name", "image_id", "height", "width")}
            for r in DatasetCatalog.get(name)]


def _imperfect_maps():
    """Car 2 missed (predicted road), the void rows predicted road, image 1's vegetation
    predicted terrain."""
    a, b = _gt_maps()
    a[a == CAR * 1000 + 2] = ROAD
    a[30:] = ROAD
    b[b == VEGETATION] = TERRAIN
    return [a, b]


def _evaluate(evaluator, name, maps):
    evaluator.reset()
    evaluator.process(_inputs(name), [_model_output(m) for m in maps])
    return evaluator.evaluate()["panoptic_seg"]


def test_perfect_predictions_score_100(panoptic_dataset, tmp_path):
    name, _ = panoptic_dataset
    evaluator = UDAPanopticEvaluator(name, distributed=False, output_dir=str(tmp_path / "out"))
    res = _evaluate(evaluator, name, _gt_maps())
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert res[key] == pytest.approx(100.0), key
    for cls in ("road", "building", "vegetation", "car"):
        assert res[f"PQ-{cls}"] == pytest.approx(100.0)
    assert math.isnan(res["PQ-sky"]) and math.isnan(res["PQ-terrain"])
    assert len([k for k in res if k.startswith("PQ-")]) == 19
    assert "mPQ16" not in res  # no 16-class subset asked for
    # Evaluating the run again rewrites its predictions (no staging folder left behind).
    again = _evaluate(evaluator, name, _imperfect_maps())
    assert again["PQ"] == pytest.approx(100 * 31 / 60)
    panoptic = tmp_path / "out" / "panoptic"
    assert sorted(os.listdir(panoptic)) == ["predictions", "predictions.json",
                                            "resultPanopticSemanticLabeling.json"]
    assert len(os.listdir(panoptic / "predictions")) == 2


def test_missed_instance_and_wrong_stuff_match_hand_computation(panoptic_dataset, tmp_path,
                                                                 monkeypatch):
    name, root = panoptic_dataset
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    evaluator = UDAPanopticEvaluator(name, distributed=False, output_dir=str(out),
                                     class_subsets={"mIoU16": SYNTHIA_16_CLASSES})
    res = _evaluate(evaluator, name, _imperfect_maps())
    # road: image 0 IoU = 480 / (576 + 480 - 480 - 96 void) = 5/6, image 1 IoU 1 -> tp 2,
    #   PQ = SQ = 11/12, RQ 1.  building: PQ 1.  car: tp 1 (IoU 1), fn 1 -> PQ = RQ = 2/3,
    #   SQ 1.  vegetation: fn 1 -> 0.  terrain: fp 1 -> 0 (present: counted in the means).
    road = 11 / 12
    assert res["PQ-road"] == pytest.approx(100 * road)
    assert res["PQ-building"] == pytest.approx(100.0)
    assert res["PQ-car"] == pytest.approx(200 / 3)
    assert res["PQ-vegetation"] == 0.0 and res["PQ-terrain"] == 0.0
    assert math.isnan(res["PQ-person"])
    assert res["PQ"] == pytest.approx(100 * (road + 1 + 0 + 0 + 2 / 3) / 5)  # 31/60
    assert res["SQ"] == pytest.approx(100 * (road + 1 + 0 + 0 + 1) / 5)
    assert res["RQ"] == pytest.approx(100 * (1 + 1 + 0 + 0 + 2 / 3) / 5)
    assert (res["PQ_th"], res["SQ_th"], res["RQ_th"]) == pytest.approx((200 / 3, 100, 200 / 3))
    assert res["PQ_st"] == pytest.approx(100 * (road + 1) / 4)
    assert res["SQ_st"] == pytest.approx(100 * (road + 1) / 4)
    assert res["RQ_st"] == pytest.approx(50.0)
    # SYNTHIA's 16 classes leave terrain out: road, building, vegetation, car.
    assert res["mPQ16"] == pytest.approx(100 * (road + 1 + 0 + 2 / 3) / 4)

    # The written predictions: standard format, re-scored by cityscapesscripts directly.
    panoptic = out / "panoptic"
    assert sorted(os.listdir(panoptic)) == ["predictions", "predictions.json",
                                            "resultPanopticSemanticLabeling.json"]
    assert os.listdir(cwd) == []  # nothing written outside the output folder
    with open(panoptic / "predictions.json") as f:
        written = json.load(f)
    with open(os.path.join(root, "panoptic.json")) as f:
        gt = json.load(f)
    assert [a["image_id"] for a in written["annotations"]] == \
        [a["image_id"] for a in gt["annotations"]]
    assert [a["file_name"] for a in written["annotations"]] == \
        [a["file_name"] for a in gt["annotations"]]
    seg0 = written["annotations"][0]["segments_info"]
    assert sorted((s["category_id"], s["isthing"], s["area"]) for s in seg0) == \
        [(ROAD, False, 672), (BUILDING, False, 768), (CAR, True, 96)]
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
    from panopticapi.utils import rgb2id

    ids = rgb2id(np.array(Image.open(panoptic / "predictions" / gt["annotations"][0][
        "file_name"])))
    assert sorted(np.unique(ids).tolist()) == sorted(s["id"] for s in seg0)
    again = evaluatePanoptic(os.path.join(root, "panoptic.json"), os.path.join(root, "panoptic"),
                             str(panoptic / "predictions.json"), str(panoptic / "predictions"),
                             str(tmp_path / "rescore.json"))
    assert 100 * again["All"]["pq"] == pytest.approx(res["PQ"])
    assert 100 * again["Things"]["rq"] == pytest.approx(res["RQ_th"])
    assert 100 * again["per_class"][ROAD]["pq"] == pytest.approx(res["PQ-road"])
    from panopticapi.evaluation import pq_compute  # COCO's tool reads them too

    coco = pq_compute(os.path.join(root, "panoptic.json"), str(panoptic / "predictions.json"),
                      os.path.join(root, "panoptic"), str(panoptic / "predictions"))
    assert 100 * coco["All"]["pq"] == pytest.approx(res["PQ"])
    assert os.listdir(cwd) == []
    with open(out / "panoptic_evaluation.json") as f:
        assert json.load(f)["PQ"] == pytest.approx(res["PQ"])


def test_void_is_id_zero_and_classes_map_back_to_label_ids():
    pan = np.array([[-1, 0, 0], [13001, 13001, 13002], [9000, 13000, -1]])
    ids, segments = label_map_to_segments(pan, 1000, {0: 7, 9: 22, 13: 26}, {13})
    by_id = {s["id"]: s for s in segments}
    # Segments numbered 1.. in increasing label order: 0, 9000, 13000, 13001, 13002.
    assert [(by_id[i]["category_id"], by_id[i]["isthing"], by_id[i]["area"])
            for i in range(1, 6)] == [(7, False, 2), (22, False, 1), (26, True, 1),
                                      (26, True, 2), (26, True, 1)]
    assert ids.tolist() == [[0, 1, 1], [4, 4, 5], [2, 3, 0]]
    with pytest.raises(ValueError, match="label 255000"):
        label_map_to_segments(np.array([[255000]]), 1000, {0: 7}, set())
    with pytest.raises(ValueError, match="label -2"):
        label_map_to_segments(np.array([[-2]]), 1000, {0: 7}, set())


def test_missing_panoptic_json_is_a_clear_error(panoptic_dataset):
    name, root = panoptic_dataset
    os.remove(os.path.join(root, "panoptic.json"))
    from duda_d2.utils.user_errors import is_user_error

    with pytest.raises(FileNotFoundError, match=r"panoptic_json '.*panoptic\.json' is not a "
                                                r"file.*createPanopticImgs") as error:
        UDAPanopticEvaluator(name, distributed=False)
    assert is_user_error(error.value)  # train_net prints the message alone


def test_an_image_without_prediction_is_an_error(panoptic_dataset):
    name, _ = panoptic_dataset
    evaluator = UDAPanopticEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process(_inputs(name)[:1], [_model_output(_gt_maps()[0])])
    with pytest.raises(ValueError, match="1 image.*got no prediction"):
        evaluator.evaluate()


def test_trainer_evaluates_pq_and_miou_on_a_panoptic_dataset(panoptic_dataset, tmp_path):
    from duda_d2.engine import UDATrainer
    from helpers import config

    name, _ = panoptic_dataset
    source = name + "_source"
    MetadataCatalog.get(source).set(eval_class_subsets={"mIoU16": list(SYNTHIA_16_CLASSES)})
    try:
        cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "DATASETS.SOURCE_TRAIN", (source,))
        evaluator = UDATrainer.build_evaluator(cfg, name, output_folder=str(tmp_path / "inf"))
        assert isinstance(evaluator, DatasetEvaluators)
        evaluator.reset()
        evaluator.process(_inputs(name), [_model_output(m) for m in _imperfect_maps()])
        res = evaluator.evaluate()
    finally:
        MetadataCatalog.remove(source)
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100 * 31 / 60)
    assert res["panoptic_seg"]["mPQ16"] == pytest.approx(100 * 31 / 48)
    # Semantic branch: road = 480 + 960 GT pixels, also predicted on car 2 (96 px; the
    # void rows predicted road are ignored) -> IoU 1440 / 1536.
    sem = res["sem_seg"]
    assert sem["IoU-road"] == pytest.approx(100 * 1440 / (1440 + 96))
    assert sem["IoU-vegetation"] == 0.0 and "mIoU16" in sem
    assert os.path.isfile(tmp_path / "inf" / "panoptic" / "predictions.json")
