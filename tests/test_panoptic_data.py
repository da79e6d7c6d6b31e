"""Panoptic data: the renderer's instance ids, panoptic ground truth in createPanopticImgs'
format (synthetic, SYNTHIA, Cityscapes), the panoptic registrations and the panoptic mapper.

Everything runs on tiny trees (48x64 synthetic scenes, 8x12 SYNTHIA / Cityscapes files).
"""
import contextlib
import copy
import hashlib
import io
import json
import os

import cv2
import numpy as np
import pytest
import torch

import duda_d2  # noqa: F401  (registers the datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog
from duda_d2.data.datasets import DatasetNotFoundError
from duda_d2.data.datasets.layout import DatasetFileError
from duda_d2.data.datasets.panoptic_registration import load_panoptic_records
from duda_d2.data.datasets.panoptic_datasets import panoptic_split
from duda_d2.data.loader import build_supervised_train_loader, build_uda_train_loader
from duda_d2.data.mappers import SemSegDatasetMapper
from duda_d2.data.panoptic_mapper import (PanopticDatasetMapper, encode_panoptic,
                                          panoptic_train_ids)
from duda_d2.prep import synthetic_scene_renderer as renderer
from duda_d2.prep.panoptic_format import (id_map_to_rgb, panoptic_id_map, read_id_map,
                                          segments_info)
from helpers import config, load_dataset_script

prep_synthetic = load_dataset_script("prepare_synthetic")
prep_synthia = load_dataset_script("prepare_synthia")
prep_cityscapes = load_dataset_script("prepare_cityscapes")

# Cityscapes label ids of the train ids used below (cityscapesscripts' table).
ROAD, SIDEWALK, SKY, PERSON, CAR = 7, 8, 23, 24, 26  # label ids
SMALL = dict(num_source=3, num_target=2, num_val=2, height=48, width=64)


def _sha1(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


# ------------------------------------------------------------------------------ renderer
def test_semantic_renders_are_unchanged_and_panoptic_adds_instance_ids():
    """Pinned before the panoptic variant existed: the semantic benchmark must not move."""
    image, label = renderer.render_scene(3, "target", 96, 128)
    assert _sha1(image) == "1bf0243d2c3c88418646decc7dfb267ab9b1689c"
    assert _sha1(label) == "1651d92b41310b338da1c4f68d021e52421c1670"
    image, label = renderer.render_scene(5, "source", 96, 128)
    assert _sha1(image) == "0bd7f87307ecae6f36f3219ac8d2214f807194ab"
    assert _sha1(label) == "19e82d9aa332a7f3a37c583f3c3e3d8af4e70543"
    for seed, style in ((3, "target"), (5, "source")):
        image, label, instances = renderer.render_panoptic_scene(seed, style, 96, 128)
        same_image, same_label = renderer.render_scene(seed, style, 96, 128)
        assert np.array_equal(image, same_image) and np.array_equal(label, same_label)
        # instance ids cover exactly the persons and cars, numbered 1..n without gaps
        assert np.array_equal(instances > 0, np.isin(label, renderer.THING_CLASSES))
        ids = np.unique(instances[instances > 0])
        assert ids.tolist() == list(range(1, len(ids) + 1)) and len(ids) >= 2
        for i in ids:  # one class per instance
            assert len(np.unique(label[instances == i])) == 1


def test_thing_instance_ids_by_hand():
    """Instances 0 sky, 1 road, 2 person, 3 car, 4 person drawn but hidden, 5 car."""
    instances = [renderer.Instance(renderer.SKY, "sky"), renderer.Instance(renderer.ROAD, "road"),
                 renderer.Instance(renderer.PERSON, "person"),
                 renderer.Instance(renderer.CAR, "car"),
                 renderer.Instance(renderer.PERSON, "person"),
                 renderer.Instance(renderer.CAR, "car")]
    index = np.array([[0, 0, 2, 5],
                      [1, 3, 2, 5],
                      [1, 3, 1, 1]], np.int32)
    layout = renderer.Layout(label=np.zeros((3, 4), np.uint8), instance=index,
                             part=np.zeros((3, 4), np.uint8), instances=instances, camera=None)
    assert renderer.thing_instance_ids(layout).tolist() == [[0, 0, 1, 3],
                                                            [0, 2, 1, 3],
                                                            [0, 2, 0, 0]]


# ------------------------------------------------------------------------------ format
def test_panoptic_id_map_and_segments_by_hand():
    train = np.array([[0, 0, 13, 13],
                      [11, 11, 13, 13],
                      [11, 255, 13, 10]], np.uint8)
    inst = np.array([[4, 0, 7, 7],
                     [7, 7, 2, 0],
                     [9, 0, 2, 3]])
    ids = panoptic_id_map(train, inst)
    # car: values 2 -> k 0, 7 -> k 1 (increasing value); value 0 on a car: crowd (26);
    # person: 7 -> 0, 9 -> 1; stuff keeps its label id whatever its instance value.
    assert ids.tolist() == [[ROAD, ROAD, 26001, 26001],
                            [24000, 24000, 26000, CAR],
                            [24001, 0, 26000, SKY]]
    assert segments_info(ids) == [
        {"id": ROAD, "category_id": ROAD, "iscrowd": 0, "area": 2, "bbox": [0, 0, 2, 1]},
        {"id": SKY, "category_id": SKY, "iscrowd": 0, "area": 1, "bbox": [3, 2, 1, 1]},
        {"id": CAR, "category_id": CAR, "iscrowd": 1, "area": 1, "bbox": [3, 1, 1, 1]},
        {"id": 24000, "category_id": PERSON, "iscrowd": 0, "area": 2, "bbox": [0, 1, 2, 1]},
        {"id": 24001, "category_id": PERSON, "iscrowd": 0, "area": 1, "bbox": [0, 2, 1, 1]},
        {"id": 26000, "category_id": CAR, "iscrowd": 0, "area": 2, "bbox": [2, 1, 1, 2]},
        {"id": 26001, "category_id": CAR, "iscrowd": 0, "area": 2, "bbox": [2, 0, 2, 1]}]
    rgb = id_map_to_rgb(ids)
    assert rgb[1, 0].tolist() == [24000 % 256, 24000 // 256, 0]
    from panopticapi.utils import rgb2id
    assert np.array_equal(rgb2id(rgb), ids)


def test_synthetic_ground_truth_equals_create_panoptic_imgs(tmp_path):
    """Our PNG and segments_info for a rendered scene equal what cityscapesscripts'
    createPanopticImgs makes from the same ids written as a Cityscapes instanceIds file."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    _, label, instances = renderer.render_panoptic_scene(7, "source", 48, 64)
    ids = panoptic_id_map(label, instances)
    city = tmp_path / "gtFine" / "val" / "x"
    os.makedirs(city)
    # Cityscapes' instanceIds files are 16-bit grayscale PNGs
    cv2.imwrite(str(city / "x_000000_000000_gtFine_instanceIds.png"), ids.astype(np.uint16))
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(tmp_path / "gtFine"), str(tmp_path), setNames=["val"])
    with open(tmp_path / "cityscapes_panoptic_val.json") as f:
        theirs = json.load(f)
    assert theirs["annotations"][0]["segments_info"] == segments_info(ids)
    png = tmp_path / "cityscapes_panoptic_val" / "x_000000_000000_gtFine_panoptic.png"
    assert np.array_equal(read_id_map(str(png)), ids)
    from duda_d2.data.datasets.panoptic_classes import PANOPTIC_CATEGORIES
    assert theirs["categories"] == PANOPTIC_CATEGORIES


# ------------------------------------------------------------------------------ synthetic
@pytest.fixture(scope="module")
def panoptic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("panoptic_root"))
    prep_synthetic.prepare_synthetic(root, nproc=1, progress=False, panoptic=True, **SMALL)
    return root


def test_prepare_synthetic_panoptic_layout_and_content(panoptic_root):
    base = os.path.join(panoptic_root, "synthetic_uda", "panoptic")
    assert not os.path.exists(os.path.join(panoptic_root, "synthetic_uda", "meta.json"))
    with open(os.path.join(base, "meta.json")) as f:
        assert json.load(f)["height"] == 48
    with open(os.path.join(base, "source", "train", "panoptic.json")) as f:
        payload = json.load(f)
    assert [i["id"] for i in payload["images"]] == [f"source_train_{i:06d}" for i in range(3)]
    assert payload["images"][0] == {"id": "source_train_000000", "file_name": "000000.png",
                                    "height": 48, "width": 64}
    annotation = payload["annotations"][1]
    seed = prep_synthetic.scene_seed(0, 0, 1)
    image, label, instances = renderer.render_panoptic_scene(seed, "source", 48, 64)
    folder = os.path.join(base, "source", "train")
    assert np.array_equal(cv2.imread(os.path.join(folder, "labels", "000001.png"), 0), label)
    assert np.array_equal(cv2.imread(os.path.join(folder, "images", "000001.png"))[..., ::-1],
                          image)
    ids = read_id_map(os.path.join(folder, "panoptic", annotation["file_name"]))
    assert np.array_equal(ids, panoptic_id_map(label, instances))
    assert annotation["segments_info"] == segments_info(ids)
    with open(os.path.join(base, "rcs_stats.json")) as f:
        assert "target/val/labels/000001.png" in json.load(f)["images"]


def test_prepare_synthetic_panoptic_resumes_and_replaces_damaged(tmp_path):
    root = str(tmp_path)
    params = dict(SMALL, num_source=2, num_target=1, num_val=1)
    first = prep_synthetic.prepare_synthetic(root, nproc=1, progress=False, panoptic=True,
                                             **params)
    assert (first["scenes"], first["rendered"], first["files_written"]) == (4, 4, 12)
    png = os.path.join(root, "synthetic_uda", "panoptic", "target", "val", "panoptic",
                       "000000.png")
    good = open(png, "rb").read()
    with open(png, "wb") as f:
        f.write(good[:100])
    again = prep_synthetic.prepare_synthetic(root, nproc=1, progress=False, panoptic=True,
                                             **params)
    assert (again["rendered"], again["files_written"], again["replaced"]) == (1, 1, 1)
    assert open(png, "rb").read() == good
    with pytest.raises(prep_synthetic.MetaMismatchError):
        prep_synthetic.prepare_synthetic(root, progress=False, panoptic=True, **{**params,
                                                                                 "height": 40})


def test_synthetic_panoptic_registration(panoptic_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", panoptic_root)
    records = DatasetCatalog.get("synthetic_uda_target_val_panoptic")
    assert len(records) == 2
    record = records[0]
    folder = os.path.join(panoptic_root, "synthetic_uda", "panoptic", "target", "val")
    assert record["image_id"] == "target_val_000000"
    assert record["file_name"] == os.path.join(folder, "images", "000000.png")
    assert record["sem_seg_file_name"] == os.path.join(folder, "labels", "000000.png")
    assert record["pan_seg_file_name"] == os.path.join(folder, "panoptic", "000000.png")
    categories = {s["category_id"] for s in record["segments_info"]}
    assert categories <= set(renderer.SYNTHETIC_CLASSES)  # contiguous train ids
    meta = MetadataCatalog.get("synthetic_uda_target_val_panoptic")
    assert meta.evaluator_type == "cityscapes_panoptic_seg" and meta.label_divisor == 1000
    assert meta.panoptic_json == os.path.join(folder, "panoptic.json")
    assert meta.panoptic_root == os.path.join(folder, "panoptic")
    assert meta.thing_dataset_id_to_contiguous_id == {24: 11, 25: 12, 26: 13, 27: 14, 28: 15,
                                                      31: 16, 32: 17, 33: 18}
    assert meta.stuff_dataset_id_to_contiguous_id[7] == 0 and len(meta.thing_classes) == 19
    # the paths follow $DETECTRON2_DATASETS when read
    monkeypatch.setenv("DETECTRON2_DATASETS", "/elsewhere")
    assert meta.panoptic_json.startswith("/elsewhere/synthetic_uda/panoptic/")


def test_synthetic_panoptic_missing_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="prepare_synthetic.py --panoptic"):
        DatasetCatalog.get("synthetic_uda_source_train_panoptic")
    root = str(tmp_path)
    prep_synthetic.prepare_synthetic(root, nproc=1, progress=False, panoptic=True,
                                     **dict(SMALL, num_source=1, num_target=1, num_val=1))
    split = panoptic_split("synthetic_uda_source_train_panoptic")
    folder = os.path.join(root, "synthetic_uda", "panoptic", "source", "train")
    os.remove(os.path.join(folder, "panoptic", "000000.png"))
    with pytest.raises(DatasetFileError, match="panoptic PNGs of synthetic_uda_source_train_pan"):
        load_panoptic_records(split, root)
    os.remove(os.path.join(folder, "panoptic.json"))
    with pytest.raises(DatasetNotFoundError, match=r"panoptic\.json' do not exist.*--panoptic"):
        load_panoptic_records(split, root)


# ------------------------------------------------------------------------------ SYNTHIA
def test_synthia_panoptic_from_instance_channel(tmp_path, monkeypatch):
    """R = SYNTHIA class, G = instance: road 3, car 8 (G 5, 9 and 0 = crowd), pedestrian 10 with
    the same G 5 as a car (another instance), parking slot 13 (not among the 16: unlabelled)."""
    cls = np.array([[3, 3, 8, 8, 8, 13],
                    [10, 10, 8, 8, 8, 13],
                    [10, 10, 3, 3, 8, 8]], np.uint16)
    inst = np.array([[0, 0, 5, 5, 9, 0],
                     [5, 5, 5, 5, 9, 0],
                     [5, 5, 0, 0, 0, 0]], np.uint16)
    base = tmp_path / "synthia"
    os.makedirs(base / "RGB")
    os.makedirs(base / "GT" / "LABELS")
    cv2.imwrite(str(base / "RGB" / "0000000.png"), np.zeros((3, 6, 3), np.uint8))
    cv2.imwrite(str(base / "GT" / "LABELS" / "0000000.png"),
                np.dstack([np.full_like(cls, 777), inst, cls]))  # B, G, R
    root = str(tmp_path)
    label_path = str(base / "GT" / "LABELS" / "0000000.png")
    assert np.array_equal(prep_synthia.read_instance_ids(label_path), inst)
    assert np.array_equal(prep_synthia.read_class_ids(label_path), cls)
    prep_synthia.prepare_synthia(root, progress=False)
    summary = prep_synthia.prepare_synthia_panoptic(root, progress=False)
    assert (summary.images, summary.converted) == (1, 1)
    png = base / "GT" / "synthia_panoptic" / "0000000_panoptic.png"
    assert read_id_map(str(png)).tolist() == [[ROAD, ROAD, 26000, 26000, 26001, 0],
                                              [24000, 24000, 26000, 26000, 26001, 0],
                                              [24000, 24000, ROAD, ROAD, CAR, CAR]]
    assert prep_synthia.main(["--root", root, "--nproc", "1", "--panoptic"]) == 0
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    (record,) = DatasetCatalog.get("synthia_panoptic_train")
    assert record["image_id"] == "0000000" and record["pan_seg_file_name"] == str(png)
    assert [(s["id"], s["category_id"], s["iscrowd"]) for s in record["segments_info"]] == [
        (ROAD, 0, 0), (CAR, 13, 1), (24000, 11, 0), (26000, 13, 0), (26001, 13, 0)]
    assert MetadataCatalog.get("synthia_panoptic_train").eval_class_subsets["mIoU16"][0] == 0


# ------------------------------------------------------------------------------ Cityscapes
def _cityscapes_tree(root):
    """Two val and one train image of city "x" with labelIds and instanceIds (8x12)."""
    label = np.full((8, 12), ROAD, np.uint8)
    label[:3] = SKY
    label[4:7, 1:4] = CAR
    label[4:8, 8:10] = PERSON
    label[7, :2] = 0  # unlabeled
    instance = label.astype(np.uint16)
    instance[4:7, 1:4] = 26000
    instance[4:8, 8:10] = 24003
    for split, n in (("train", 1), ("val", 2)):
        for i in range(n):
            stem = f"x_{i:06d}_000019"
            img_dir = os.path.join(root, "cityscapes", "leftImg8bit", split, "x")
            gt_dir = os.path.join(root, "cityscapes", "gtFine", split, "x")
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(gt_dir, exist_ok=True)
            cv2.imwrite(os.path.join(img_dir, f"{stem}_leftImg8bit.png"),
                        np.full((8, 12, 3), 40 * i, np.uint8))
            cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"), label)
            cv2.imwrite(os.path.join(gt_dir, f"{stem}_gtFine_instanceIds.png"), instance)


def test_cityscapes_panoptic_matches_detectron2(tmp_path, monkeypatch):
    from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
    from detectron2.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic

    root = str(tmp_path)
    _cityscapes_tree(root)
    stats = prep_cityscapes.prepare_cityscapes(root, nproc=1, progress=False, panoptic=True)
    assert stats["panoptic_converted"] == ["train", "val"]
    assert prep_cityscapes.prepare_cityscapes_panoptic(root, progress=False) == []  # resumed
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_val")
    # what Detectron2's register_all_cityscapes_panoptic gives its loader
    things = {k["id"]: k["trainId"] for k in CITYSCAPES_CATEGORIES if k["isthing"]}
    stuff = {k["id"]: k["trainId"] for k in CITYSCAPES_CATEGORIES if not k["isthing"]}
    d2_meta = {"thing_dataset_id_to_contiguous_id": things,
               "stuff_dataset_id_to_contiguous_id": stuff}
    for key, value in d2_meta.items():
        assert getattr(meta, key) == value
    assert meta.thing_classes == [k["name"] for k in CITYSCAPES_CATEGORIES]
    cs = os.path.join(root, "cityscapes")
    assert meta.gt_dir == os.path.join(cs, "gtFine", "val")
    assert meta.image_root == os.path.join(cs, "leftImg8bit", "val")
    ours = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    theirs = load_cityscapes_panoptic(meta.image_root, meta.panoptic_root, meta.panoptic_json,
                                      d2_meta)
    key = lambda r: r["image_id"]  # noqa: E731
    assert sorted(ours, key=key) == sorted(theirs, key=key)
    segments = {s["id"]: s for s in ours[0]["segments_info"]}
    assert segments[26000]["category_id"] == 13 and segments[24003]["category_id"] == 11


def test_cityscapes_panoptic_needs_instance_ids(tmp_path):
    root = str(tmp_path)
    _cityscapes_tree(root)
    os.remove(os.path.join(root, "cityscapes", "gtFine", "val", "x",
                           "x_000001_000019_gtFine_instanceIds.png"))
    with pytest.raises(DatasetNotFoundError, match="1 of 2 Cityscapes val images have no"):
        prep_cityscapes.prepare_cityscapes(root, nproc=1, progress=False, panoptic=True)


# ------------------------------------------------------------------------------ mapper
# A hand-made 4x4 panoptic PNG: road (stuff), a crowd of cars, two persons, unlabelled.
IDS = np.array([[ROAD, ROAD, 24000, 24000],
                [ROAD, CAR, 24000, 0],
                [24001, CAR, CAR, 0],
                [24001, 24001, ROAD, ROAD]])
SEGMENTS = [{"id": ROAD, "category_id": 0, "iscrowd": 0},
            {"id": CAR, "category_id": 13, "iscrowd": 1},
            {"id": 24000, "category_id": 11, "iscrowd": 0},
            {"id": 24001, "category_id": 11, "iscrowd": 0}]


def test_encode_panoptic_by_hand():
    assert encode_panoptic(IDS, SEGMENTS).tolist() == [[0, 0, 11001, 11001],
                                                       [0, 13000, 11001, 255000],
                                                       [11002, 13000, 13000, 255000],
                                                       [11002, 11002, 0, 0]]
    assert panoptic_train_ids(IDS, SEGMENTS).tolist() == [[0, 0, 11, 11],
                                                          [0, 13, 11, 255],
                                                          [11, 13, 13, 255],
                                                          [11, 11, 0, 0]]
    with pytest.raises(ValueError, match="holds id 24001, which its segments_info"):
        encode_panoptic(IDS, SEGMENTS[:3], source="x.png")


def _record(tmp_path, ids, segments, image=None):
    pan = str(tmp_path / "pan.png")
    cv2.imwrite(pan, id_map_to_rgb(ids)[..., ::-1])
    if image is None:
        image = np.zeros(ids.shape + (3,), np.uint8)
    cv2.imwrite(str(tmp_path / "img.png"), image[..., ::-1])
    return {"file_name": str(tmp_path / "img.png"), "image_id": "a", "pan_seg_file_name": pan,
            "segments_info": segments}


def test_mapper_output_of_the_hand_made_example(tmp_path):
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "MODEL.TASK", "panoptic",
                 "INPUT.CROP.ENABLED", False, "INPUT.RANDOM_FLIP", "none")
    out = PanopticDatasetMapper(cfg, is_train=True)(_record(tmp_path, IDS, SEGMENTS))
    assert out["pan_seg"].dtype == torch.int64
    assert out["pan_seg"].tolist() == encode_panoptic(IDS, SEGMENTS).tolist()
    assert torch.equal(out["sem_seg"], out["pan_seg"] // 1000)
    assert (out["height"], out["width"]) == (4, 4) and "segments_info" not in out
    with pytest.raises(ValueError, match="has no panoptic label"):
        PanopticDatasetMapper(cfg, is_train=True)({"file_name": out["file_name"]})


def test_crop_and_flip_keep_image_and_pan_seg_aligned(tmp_path):
    """Each segment has its own image colour: after crop + flip every pixel's colour must still
    be its segment's."""
    rng = np.random.default_rng(0)
    ids = np.zeros((40, 56), np.int64)
    segments, colours = [], {}
    for n, (y, x) in enumerate(rng.integers(0, 8, (30, 2)) * [5, 7]):
        seg_id = (24 if n % 2 else 26) * 1000 + n
        ids[y:y + 5, x:x + 7] = seg_id
    for value in np.unique(ids):
        if value:
            segments.append({"id": int(value), "category_id": 11 if value // 1000 == 24 else 13,
                             "iscrowd": 0})
        colours[int(value)] = rng.integers(0, 256, 3)
    image = np.stack([colours[int(v)] for v in ids.ravel()]).reshape(40, 56, 3).astype(np.uint8)
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "MODEL.TASK", "panoptic",
                 "INPUT.CROP.SIZE", (24, 32), "INPUT.RANDOM_FLIP", "horizontal")
    mapper = PanopticDatasetMapper(cfg, is_train=True)
    record = _record(tmp_path, ids, segments, image)
    flipped = 0
    for seed in range(6):
        np.random.seed(seed)
        out = mapper(record)
        img = out["image"].permute(1, 2, 0).numpy()  # INPUT.FORMAT "RGB"
        pan = out["pan_seg"].numpy()
        assert img.shape[:2] == pan.shape == (24, 32)
        # pixels of one panoptic id share one colour, and distinct ids distinct colours
        pairs = {(int(p), tuple(c)) for p, c in zip(pan.ravel(), img.reshape(-1, 3))}
        assert len(pairs) == len(np.unique(pan))
        # the crop is a (possibly mirrored) window of the original colours
        matches = [np.array_equal(img, w) or np.array_equal(img, w[:, ::-1])
                   for w in (image[y:y + 24, x:x + 32] for y in range(17) for x in range(25))]
        assert any(matches)
        flipped += not any(np.array_equal(img, image[y:y + 24, x:x + 32])
                           for y in range(17) for x in range(25))
    assert 0 < flipped < 6


def test_panoptic_and_semantic_mappers_draw_the_same_augmentations(panoptic_root):
    """Resize (nearest on the labels), the category-area crop and the rare-class re-draws: with
    the same numpy seed, pan_seg // 1000 equals the semantic mapper's sem_seg."""
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "MODEL.TASK", "panoptic",
                 "INPUT.SOURCE_SIZE", (36, 50), "INPUT.CROP.SIZE", (24, 24),
                 "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", 0.5, "DATALOADER.RCS.ENABLED", True,
                 "DATALOADER.RCS.MIN_PIXELS", 40)
    records = load_panoptic_records(panoptic_split("synthetic_uda_source_train_panoptic"),
                                    panoptic_root)
    panoptic, semantic = PanopticDatasetMapper(cfg), SemSegDatasetMapper(cfg)
    for seed, record in enumerate(records):
        for rare in (None, 11):
            np.random.seed(seed)
            pan = panoptic(copy.deepcopy(record), rare_class=rare)
            np.random.seed(seed)
            sem = semantic(copy.deepcopy(record), rare_class=rare)
            assert torch.equal(pan["image"], sem["image"])
            assert torch.equal(pan["pan_seg"] // 1000, sem["sem_seg"])
            assert pan["pan_seg"].shape == (24, 24)


def test_loader_uses_the_panoptic_mapper(panoptic_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", panoptic_root)
    opts = ["MODEL.TASK", "panoptic", "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2,
            "INPUT.CROP.SIZE", (32, 32)]
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", *opts,
                 "DATASETS.TRAIN", ("synthetic_uda_source_train_panoptic",))
    batch = next(iter(build_supervised_train_loader(cfg)))
    assert len(batch) == 2 and batch[0]["pan_seg"].shape == (32, 32)
    assert torch.equal(batch[0]["sem_seg"], batch[0]["pan_seg"] // 1000)
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", *opts,
                 "DATASETS.SOURCE_TRAIN", ("synthetic_uda_source_train_panoptic",),
                 "DATASETS.TARGET_TRAIN", ("synthetic_uda_target_train_panoptic",),
                 "DATALOADER.SOURCE_IMS_PER_BATCH", 1, "DATALOADER.TARGET_IMS_PER_BATCH", 1)
    (source,), (target,) = next(iter(build_uda_train_loader(cfg)))
    assert source["pan_seg"].shape == (32, 32)
    assert not {"pan_seg", "sem_seg", "segments_info"} & set(target)  # target: image only
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", *opts,
                 "DATASETS.TRAIN", ("synthetic_uda_source_train",))
    with pytest.raises(ValueError, match="has no panoptic metadata"):
        build_supervised_train_loader(cfg)


def test_ground_truth_scores_pq_100_against_itself(panoptic_root, monkeypatch):
    """The project's panoptic evaluator (cityscapesscripts' evaluatePanoptic) reads the
    synthetic panoptic JSON and PNGs: the ground truth, as a model's label map, is perfect."""
    from duda_d2.evaluation.panoptic_evaluation import UDAPanopticEvaluator

    monkeypatch.setenv("DETECTRON2_DATASETS", panoptic_root)
    name = "synthetic_uda_target_val_panoptic"
    evaluator = UDAPanopticEvaluator(name, distributed=False)
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        pan = encode_panoptic(read_id_map(record["pan_seg_file_name"]), record["segments_info"])
        pan = np.where(pan == 255000, -1, pan)  # Panoptic-DeepLab's void
        evaluator.process([{**record, "height": 48, "width": 64}],
                          [{"panoptic_seg": (torch.as_tensor(pan), None)}])
    result = evaluator.evaluate()["panoptic_seg"]
    assert result["PQ"] == result["PQ_th"] == result["PQ-person"] == result["PQ-car"] == 100.0
