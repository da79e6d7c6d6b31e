"""Cityscapes, ACDC and Dark Zurich: preparation scripts, registration and their errors.

Each test builds a tiny fake tree (32x64 images) with the real datasets' folder layout and file
formats: Cityscapes ``*_gtFine_labelIds.png`` for one city and only ``*_gtFine_polygons.json``
for another, ACDC / Dark Zurich ``*_gt_labelTrainIds.png``.
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import duda_d2  # noqa: F401  (registers the datasets)
from duda_d2.data.datasets import DatasetNotFoundError
from duda_d2.data.labels import InvalidLabelError
from duda_d2.data.rcs_stats_file import load_rcs_stats
from duda_d2.prep.rcs_stats_computation import class_pixel_counts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 32, 64

# Cityscapes label id -> train id for the ids used here, written out independently of the
# scripts' table (cityscapesscripts' helpers/labels.py is the reference).
LABEL_ID_TO_TRAIN_ID = {0: 255, 1: 255, 4: 255, 6: 255, 7: 0, 8: 1, 11: 2, 21: 8, 23: 10,
                        24: 11, 26: 13, 30: 255, 33: 18}


from helpers import load_dataset_script  # noqa: E402

prep_cs = load_dataset_script("prepare_cityscapes")
prep_acdc = load_dataset_script("prepare_acdc")
prep_dz = load_dataset_script("prepare_dark_zurich")


def _write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, array)


def _image(path, seed):
    _write(path, np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


# Polygons drawn in order; the expected train ids below follow cityscapesscripts' rules: a
# "...group" label is its class, a label with id -1 (license plate) and deleted objects are not
# drawn, and rectangles cover both end pixels.
POLYGONS = {"imgHeight": H, "imgWidth": W, "objects": [
    {"label": "road", "polygon": _rect(0, 0, W - 1, H - 1)},
    {"label": "cargroup", "polygon": _rect(10, 5, 20, 15)},
    {"label": "license plate", "polygon": _rect(12, 12, 14, 13)},
    {"label": "sky", "polygon": _rect(30, 0, 50, 8)},
    {"label": "person", "polygon": _rect(40, 20, 45, 30), "deleted": 1},
    {"label": "static", "polygon": _rect(0, 25, 5, H - 1)},
]}


def _polygon_train_ids():
    expected = np.zeros((H, W), np.uint8)  # road
    expected[5:16, 10:21] = 13  # car
    expected[0:9, 30:51] = 10  # sky
    expected[25:H, 0:6] = 255  # static: ignored
    return expected


def make_cityscapes(root):
    """aachen (train) and frankfurt (val) with label-id PNGs, bremen (train) with polygons only.

    Returns {train-id label path relative to <root>/cityscapes: expected train ids}.
    """
    base = os.path.join(root, "cityscapes")
    rng = np.random.default_rng(0)
    ids = np.array(sorted(LABEL_ID_TO_TRAIN_ID), np.uint8)
    lut = np.full(256, 255, np.uint8)
    lut[list(LABEL_ID_TO_TRAIN_ID)] = list(LABEL_ID_TO_TRAIN_ID.values())
    expected = {}
    for split, city, frames, kind in (("train", "aachen", 2, "ids"), ("train", "bremen", 1, "json"),
                                      ("val", "frankfurt", 1, "ids")):
        for frame in range(frames):
            stem = f"{city}_{frame:06d}_000019"
            _image(os.path.join(base, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"),
                   seed=frame)
            gt = os.path.join(base, "gtFine", split, city, f"{stem}_gtFine_")
            if kind == "ids":
                label_ids = rng.choice(ids, (H, W))
                _write(gt + "labelIds.png", label_ids)
                expected[os.path.relpath(gt + "labelTrainIds.png", base)] = lut[label_ids]
            else:
                os.makedirs(os.path.dirname(gt), exist_ok=True)
                with open(gt + "polygons.json", "w") as f:
                    json.dump(POLYGONS, f)
                expected[os.path.relpath(gt + "labelTrainIds.png", base)] = _polygon_train_ids()
    return expected


def _train_ids(rng):
    return rng.choice(np.r_[np.arange(19), 255].astype(np.uint8), (H, W))


def _labelled_pair(base, image_folder, label_folder, seq, frame, rng):
    name = f"{seq}_frame_{frame:06d}"
    _image(os.path.join(base, image_folder, seq, f"{name}_rgb_anon.png"), seed=frame)
    if label_folder is not None:
        _write(os.path.join(base, label_folder, seq, f"{name}_gt_labelTrainIds.png"),
               _train_ids(rng))


def make_acdc(root):
    """One labelled image per condition and split."""
    rng = np.random.default_rng(1)
    for cond in ("fog", "night", "rain", "snow"):
        for split in ("train", "val"):
            _labelled_pair(os.path.join(root, "acdc"), f"rgb_anon/{cond}/{split}",
                           f"gt/{cond}/{split}", "GOPR0475", 1, rng)


def make_dark_zurich(root):
    """Two unlabelled night train images, one (unused) day image, one labelled val image."""
    rng = np.random.default_rng(2)
    base = os.path.join(root, "dark_zurich")
    for frame in (1, 2):
        _labelled_pair(base, "rgb_anon/train/night", None, "GOPR0355", frame, rng)
    _labelled_pair(base, "rgb_anon/train/day", None, "GOPR0356", 3, rng)
    _labelled_pair(base, "rgb_anon/val/night", "gt/val/night", "GOPR0356", 4, rng)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return str(tmp_path)


def _read(path):
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


# ---------------------------------------------------------------- Cityscapes


def test_cityscapes_train_ids_pixel_exact_and_rcs_stats(root):
    expected = make_cityscapes(root)
    stats = prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    assert stats == {"converted": 4, "replaced": 0, "skipped": 0, "rcs_stats_written": 1}
    base = os.path.join(root, "cityscapes")
    for rel, train_ids in expected.items():
        np.testing.assert_array_equal(_read(os.path.join(base, rel)), train_ids, err_msg=rel)

    rcs = load_rcs_stats(base)
    train = {rel: ids for rel, ids in expected.items() if "/train/" in rel}
    assert rcs == {rel: {int(c): n for c, n in class_pixel_counts(ids).items()}
                   for rel, ids in train.items()}
    records = DatasetCatalog.get("cityscapes_fine_sem_seg_train")
    assert sorted(os.path.relpath(r["sem_seg_file_name"], base) for r in records) == sorted(rcs)


def test_cityscapes_is_resumable(root):
    make_cityscapes(root)
    prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    base = os.path.join(root, "cityscapes")
    rcs_path = os.path.join(base, "rcs_stats.json")
    kept = os.path.join(base, "gtFine/train/bremen/bremen_000000_000019_gtFine_labelTrainIds.png")
    mtimes = {p: os.stat(p).st_mtime_ns for p in (rcs_path, kept)}

    again = prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    assert again == {"converted": 0, "replaced": 0, "skipped": 4, "rcs_stats_written": 0}
    assert {p: os.stat(p).st_mtime_ns for p in mtimes} == mtimes

    before = load_rcs_stats(base)
    os.remove(os.path.join(
        base, "gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png"))
    resumed = prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    assert resumed == {"converted": 1, "replaced": 0, "skipped": 3, "rcs_stats_written": 1}
    assert os.stat(kept).st_mtime_ns == mtimes[kept]
    assert load_rcs_stats(base) == before
    assert not [n for _, _, names in os.walk(base) for n in names if ".tmp" in n]


def test_cityscapes_cli_with_two_processes(tmp_path):
    expected = make_cityscapes(str(tmp_path))
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "elsewhere")}
    out = subprocess.run([sys.executable, os.path.join(REPO, "datasets", "prepare_cityscapes.py"),
                          "--root", str(tmp_path), "--nproc", "2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "4 labels converted" in out.stdout
    for rel, train_ids in expected.items():
        np.testing.assert_array_equal(_read(os.path.join(tmp_path, "cityscapes", rel)), train_ids)
    assert os.path.isfile(tmp_path / "cityscapes" / "rcs_stats.json")


def test_cityscapes_registration_replaces_detectron2s(root):
    make_cityscapes(root)
    with pytest.raises(DatasetNotFoundError, match="prepare_cityscapes.py"):
        DatasetCatalog.get("cityscapes_fine_sem_seg_train")  # extracted, not prepared yet
    prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    train = DatasetCatalog.get("cityscapes_fine_sem_seg_train")
    val = DatasetCatalog.get("cityscapes_fine_sem_seg_val")
    assert (len(train), len(val)) == (3, 1)
    assert all(os.path.isfile(r["sem_seg_file_name"]) for r in train + val)
    assert train[0]["image_id"] == "aachen_000000_000019"
    meta = MetadataCatalog.get("cityscapes_fine_sem_seg_train")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert len(meta.stuff_classes) == len(meta.stuff_colors) == 19
    assert meta.dataset_dir_name == "cityscapes"
    assert meta.rcs_prepare_script == "datasets/prepare_cityscapes.py"
    assert MetadataCatalog.get("cityscapes_fine_sem_seg_val").evaluator_type == "sem_seg"


def _assert_helpful(error, *parts):
    message = str(error.value)
    for part in ("DETECTRON2_DATASETS",) + parts:
        assert part in message, (part, message)


def test_cityscapes_missing_and_half_extracted(root):
    base = os.path.join(root, "cityscapes")
    with pytest.raises(DatasetNotFoundError) as e:
        prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    _assert_helpful(e, base, "prepare_cityscapes.py", "cityscapes-dataset.com")
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get("cityscapes_fine_sem_seg_val")
    _assert_helpful(e, base, "prepare_cityscapes.py")

    make_cityscapes(root)
    os.rename(os.path.join(base, "gtFine", "train", "bremen"), os.path.join(root, "bremen"))
    with pytest.raises(DatasetNotFoundError) as e:
        prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    _assert_helpful(e, "bremen", "gtFine_trainvaltest.zip", "prepare_cityscapes.py")

    os.rename(os.path.join(root, "bremen"), os.path.join(base, "gtFine", "train", "bremen"))
    orphan = os.path.join(base, "leftImg8bit/val/frankfurt/frankfurt_000009_000019_leftImg8bit.png")
    _image(orphan, seed=9)
    with pytest.raises(DatasetNotFoundError) as e:
        prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    _assert_helpful(e, orphan, "labelIds", "polygons")
    assert not os.path.exists(os.path.join(base, "rcs_stats.json"))  # checked before converting

    os.remove(orphan)
    os.rename(os.path.join(base, "leftImg8bit", "val"), os.path.join(root, "val"))
    with pytest.raises(DatasetNotFoundError) as e:
        prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    _assert_helpful(e, os.path.join(base, "leftImg8bit", "val"), "leftImg8bit_trainvaltest.zip")


# ---------------------------------------------------------------- ACDC and Dark Zurich


def test_acdc_and_dark_zurich_check_index_and_register(root):
    make_acdc(root)
    make_dark_zurich(root)
    acdc = prep_acdc.prepare_acdc(root, nproc=1, progress=False)
    dz = prep_dz.prepare_dark_zurich(root, nproc=1, progress=False)
    with open(os.path.join(root, "acdc", "index.json")) as f:
        assert json.load(f) == acdc
    with open(os.path.join(root, "dark_zurich", "index.json")) as f:
        assert json.load(f) == dz

    train = acdc["splits"]["acdc_train"]
    assert (train["num_images"], train["num_labels"]) == (4, 4)
    assert train["images_per_folder"] == {f"rgb_anon/{c}/train": 1
                                          for c in ("fog", "night", "rain", "snow")}
    assert train["images"][0] == "rgb_anon/fog/train/GOPR0475/GOPR0475_frame_000001_rgb_anon.png"
    assert train["labels"][0] == "gt/fog/train/GOPR0475/GOPR0475_frame_000001_gt_labelTrainIds.png"
    assert {k: (v["num_images"], v["num_labels"]) for k, v in dz["splits"].items()} == {
        "dark_zurich_train": (2, 0), "dark_zurich_val": (1, 1)}

    counts = {name: len(DatasetCatalog.get(name))
              for name in ("acdc_train", "acdc_val", "dark_zurich_train", "dark_zurich_val")}
    assert counts == {"acdc_train": 4, "acdc_val": 4, "dark_zurich_train": 2,
                      "dark_zurich_val": 1}
    assert not any("sem_seg_file_name" in r for r in DatasetCatalog.get("dark_zurich_train"))
    for name in ("acdc_train", "acdc_val", "dark_zurich_val"):
        records = DatasetCatalog.get(name)
        assert all(os.path.isfile(r["sem_seg_file_name"]) for r in records)
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "sem_seg" and len(meta.stuff_classes) == 19
    assert MetadataCatalog.get("dark_zurich_train").ignore_label == 255


def test_acdc_and_dark_zurich_errors(root):
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get("acdc_val")
    _assert_helpful(e, os.path.join(root, "acdc"), "prepare_acdc.py", "acdc.vision.ee.ethz.ch")
    with pytest.raises(DatasetNotFoundError) as e:
        prep_dz.prepare_dark_zurich(root, nproc=1, progress=False)
    _assert_helpful(e, os.path.join(root, "dark_zurich"), "prepare_dark_zurich.py")

    make_acdc(root)
    bad = os.path.join(root, "acdc/gt/rain/val/GOPR0475/GOPR0475_frame_000001_gt_labelTrainIds.png")
    label = _read(bad)
    label[3, 4] = 40
    _write(bad, label)
    with pytest.raises(InvalidLabelError) as e:
        prep_acdc.prepare_acdc(root, nproc=1, progress=False)
    assert bad in str(e.value) and "40" in str(e.value)
    assert not os.path.exists(os.path.join(root, "acdc", "index.json"))

    os.remove(bad)  # half-extracted gt: an image without its label
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get("acdc_val")
    _assert_helpful(e, bad, "prepare_acdc.py")


# ---------------------------------------------------------------- damaged and orphan files


def test_cityscapes_replaces_damaged_labels_and_rejects_damaged_downloads(root, capsys):
    expected = make_cityscapes(root)
    prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    base = os.path.join(root, "cityscapes")
    empty, cut = (os.path.join(base, f"gtFine/{split}/{city}/{city}_00000{i}_000019_"
                               "gtFine_labelTrainIds.png")
                  for split, city, i in (("train", "aachen", 1), ("val", "frankfurt", 0)))
    open(empty, "wb").close()
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) - 10)
    assert prep_cs.main(["--root", root, "--nproc", "1"]) == 0
    assert "2 labels converted (2 empty or damaged files replaced), 2 already there" in \
        capsys.readouterr().out
    for path in (empty, cut):
        np.testing.assert_array_equal(_read(path), expected[os.path.relpath(path, base)])

    image = os.path.join(base, "leftImg8bit/train/bremen/bremen_000000_000019_leftImg8bit.png")
    with open(image, "wb") as f:
        f.write(b"\0" * 4096)
    os.remove(empty)
    with pytest.raises(DatasetNotFoundError) as e:
        prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    _assert_helpful(e, f"{image}: not a PNG file", "leftImg8bit_trainvaltest.zip",
                    "1 of 5 images and label-id PNGs of Cityscapes train")
    assert not os.path.exists(empty)  # checked before converting


def test_cityscapes_labels_without_images_are_an_error(root):
    make_cityscapes(root)
    base = os.path.join(root, "cityscapes")
    image = os.path.join(base, "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png")
    os.remove(image)  # leftImg8bit half-extracted: its gtFine files have no image
    with pytest.raises(DatasetNotFoundError) as e:
        prep_cs.prepare_cityscapes(root, nproc=1, progress=False)
    _assert_helpful(e, "1 label of cityscapes_fine_sem_seg_train has no image",
                    image.replace("leftImg8bit/train", "gtFine/train").replace(
                        "_leftImg8bit.png", "_gtFine_labelIds.png"),
                    "leftImg8bit_trainvaltest.zip")


def test_acdc_damaged_image_is_an_error_at_prepare_and_start_up(root):
    make_acdc(root)
    image = os.path.join(root, "acdc/rgb_anon/snow/train/GOPR0475",
                         "GOPR0475_frame_000001_rgb_anon.png")
    open(image, "wb").close()
    for check in (lambda: prep_acdc.prepare_acdc(root, nproc=1, progress=False),
                  lambda: DatasetCatalog.get("acdc_train")):
        with pytest.raises(DatasetNotFoundError) as e:
            check()
        _assert_helpful(e, f"{image}: 0 bytes", "1 of 8 image and label files of acdc_train",
                        "rgb_anon_trainvaltest.zip")
    assert len(DatasetCatalog.get("acdc_val")) == 4
    _image(image, seed=1)
    label = image.replace("rgb_anon/", "gt/").replace("_rgb_anon.png", "_gt_labelTrainIds.png")
    label = label.replace("frame_000001", "frame_000002")
    _write(label, _train_ids(np.random.default_rng(0)))  # gt extracted, its image not
    with pytest.raises(DatasetNotFoundError) as e:
        prep_acdc.prepare_acdc(root, nproc=1, progress=False)
    _assert_helpful(e, "1 label of acdc_train has no image", label, "rgb_anon_trainvaltest.zip")
