"""datasets/prepare_gta5.py, datasets/prepare_synthia.py and the gta5_train / synthia_train
registration, on tiny fake trees that follow the real downloads' layouts and file formats."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from PIL import Image

import duda_d2  # noqa: F401  (registers the datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog
from duda_d2.data.datasets import DatasetNotFoundError
from duda_d2.data.datasets.cityscapes_classes import SYNTHIA_13_CLASSES, SYNTHIA_16_CLASSES
from duda_d2.data.rcs_stats_file import RCS_STATS_FILE
from duda_d2.prep.label_conversion import LabelFormatError
from duda_d2.prep.rcs_stats_computation import class_pixel_counts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W, N = 40, 60, 3


from helpers import load_dataset_script  # noqa: E402

gta5 = load_dataset_script("prepare_gta5")
synthia = load_dataset_script("prepare_synthia")

# Expected mappings, written independently of the scripts' tables.
CS_LABEL_TO_TRAIN = {l.id: (l.trainId if 0 <= l.trainId < 255 else 255)
                     for l in CITYSCAPES_LABELS if l.id >= 0}
SYNTHIA_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11,
                    17: 12, 8: 13, 19: 15, 12: 17, 11: 18}


def _expected(ids, mapping):
    return np.vectorize(lambda v: mapping.get(int(v), 255), otypes=[np.uint8])(ids)


def _write_image(path, rng):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def _palette_png(path, ids):
    """A GTA5-style label: palette indices = label ids, palette = Cityscapes colours."""
    palette = np.zeros((256, 3), np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.id >= 0:
            palette[label.id] = label.color
    palette[34:] = (17, 99, 201)  # unknown ids: some colour, index must still win
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette(palette.ravel().tolist())
    image.save(path)


@pytest.fixture
def gta5_root(tmp_path):
    """``<tmp>/gta5/{images,labels}/0000N.png``; returns (root, {stem: label ids})."""
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "gta5" / "labels")
    ids = {}
    for i in range(1, N + 1):
        stem = f"{i:05d}"
        _write_image(str(tmp_path / "gta5" / "images" / f"{stem}.png"), rng)
        # every Cityscapes id, plus ids GTA5 has outside the table (34) and anything else
        values = rng.choice(np.r_[np.arange(34), 34, 200, 255], size=(H, W))
        _palette_png(str(tmp_path / "gta5" / "labels" / f"{stem}.png"), values)
        ids[stem] = values
    return str(tmp_path), ids


def _synthia_label(path, class_ids, rng):
    """A SYNTHIA-style label: 16-bit, class in R, instance ids and garbage in G and B.

    OpenCV writes BGR arrays as RGB PNGs, so the class goes into the array's last channel.
    """
    instance = rng.integers(0, 5000, class_ids.shape).astype(np.uint16)
    garbage = rng.integers(0, 65536, class_ids.shape).astype(np.uint16)
    assert cv2.imwrite(path, np.dstack([garbage, instance, class_ids.astype(np.uint16)]))


@pytest.fixture
def synthia_root(tmp_path):
    """``<tmp>/synthia/RGB/000000N.png`` and ``GT/LABELS``; returns (root, {stem: class ids})."""
    rng = np.random.default_rng(1)
    label_dir = tmp_path / "synthia" / "GT" / "LABELS"
    os.makedirs(label_dir)
    ids = {}
    for i in range(N):
        stem = f"{i:07d}"
        _write_image(str(tmp_path / "synthia" / "RGB" / f"{stem}.png"), rng)
        values = rng.choice(np.r_[np.arange(23), 300, 1000], size=(H, W))
        _synthia_label(str(label_dir / f"{stem}.png"), values, rng)
        ids[stem] = values
    return str(tmp_path), ids


def _read(path):
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def test_cv2_bgr_array_is_stored_with_r_first(tmp_path):
    """The fake SYNTHIA writer's premise, checked with PIL (which reads PNG channels in order)."""
    path = str(tmp_path / "x.png")
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 1 << 8, 9 << 8, 5 << 8  # B=1, G=9, R=5 (high byte)
    cv2.imwrite(path, bgr)
    assert np.asarray(Image.open(path).convert("RGB"))[0, 0].tolist() == [5, 9, 1]
    assert synthia.read_class_ids(path)[0, 0] == 5 << 8


def test_gta5_conversion_stats_and_resume(gta5_root):
    root, ids = gta5_root
    summary = gta5.prepare_gta5(root, nproc=1, progress=False)
    assert (summary.images, summary.converted, summary.skipped) == (N, N, 0)
    assert CS_LABEL_TO_TRAIN[7] == 0 and CS_LABEL_TO_TRAIN[26] == 13  # road, car
    expected = {}
    for stem, values in ids.items():
        out = _read(os.path.join(root, "gta5", "labels", f"{stem}_labelTrainIds.png"))
        assert out.dtype == np.uint8 and out.shape == (H, W)
        want = _expected(values, CS_LABEL_TO_TRAIN)
        np.testing.assert_array_equal(out, want)
        assert (out[values >= 34] == 255).all() and (out[values == 0] == 255).all()
        expected[f"labels/{stem}_labelTrainIds.png"] = class_pixel_counts(want)

    with open(os.path.join(root, "gta5", RCS_STATS_FILE)) as f:
        stats = json.load(f)
    assert stats["num_classes"] == 19 and stats["images"] == expected

    label_dir = os.path.join(root, "gta5", "labels")
    before = {n: os.stat(os.path.join(label_dir, n)).st_mtime_ns for n in os.listdir(label_dir)}
    os.remove(os.path.join(root, "gta5", RCS_STATS_FILE))
    again = gta5.prepare_gta5(root, nproc=1, progress=False)
    assert (again.converted, again.skipped) == (0, N)
    after = {n: os.stat(os.path.join(label_dir, n)).st_mtime_ns for n in os.listdir(label_dir)}
    assert after == before
    with open(os.path.join(root, "gta5", RCS_STATS_FILE)) as f:
        assert json.load(f)["images"] == expected  # statistics of skipped files still counted

    os.remove(os.path.join(label_dir, "00002_labelTrainIds.png"))  # an interrupted run
    assert gta5.prepare_gta5(root, nproc=1, progress=False).converted == 1


def test_synthia_conversion_via_cli(synthia_root):
    root, ids = synthia_root
    proc = subprocess.run([sys.executable, os.path.join(REPO, "datasets", "prepare_synthia.py"),
                           "--root", root, "--nproc", "2"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 converted" in proc.stdout
    expected = {}
    for stem, values in ids.items():
        out = _read(os.path.join(root, "synthia", "GT", "LABELS", f"{stem}_labelTrainIds.png"))
        want = _expected(values, SYNTHIA_TO_TRAIN)
        np.testing.assert_array_equal(out, want)
        assert (out[values >= 256] == 255).all()  # 16-bit ids beyond any table
        expected[f"GT/LABELS/{stem}_labelTrainIds.png"] = class_pixel_counts(want)
    with open(os.path.join(root, "synthia", RCS_STATS_FILE)) as f:
        assert json.load(f)["images"] == expected
    again = synthia.prepare_synthia(root, nproc=1, progress=False)
    assert (again.converted, again.skipped) == (0, N)


def test_registered_records_and_metadata(gta5_root, synthia_root, monkeypatch):
    root, _ = gta5_root  # both fixtures share tmp_path
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    with pytest.raises(DatasetNotFoundError, match="prepare_synthia.py"):
        DatasetCatalog.get("synthia_train")  # images there, labels not converted yet
    gta5.prepare_gta5(root, progress=False)
    synthia.prepare_synthia(root, progress=False)

    records = DatasetCatalog.get("gta5_train")
    assert len(records) == N
    assert records[0] == {
        "file_name": os.path.join(root, "gta5", "images", "00001.png"),
        "sem_seg_file_name": os.path.join(root, "gta5", "labels", "00001_labelTrainIds.png"),
        "image_id": "00001"}
    records = DatasetCatalog.get("synthia_train")
    assert len(records) == N and all(os.path.isfile(r["sem_seg_file_name"]) for r in records)

    for name, dir_name in (("gta5_train", "gta5"), ("synthia_train", "synthia")):
        meta = MetadataCatalog.get(name)
        assert len(meta.stuff_classes) == 19 and meta.ignore_label == 255
        assert meta.evaluator_type == "sem_seg" and meta.dataset_dir_name == dir_name
        assert meta.rcs_prepare_script == f"datasets/prepare_{dir_name}.py"
        assert os.path.isfile(os.path.join(root, meta.dataset_dir_name, RCS_STATS_FILE))
    assert MetadataCatalog.get("synthia_train").eval_class_subsets == {
        "mIoU16": SYNTHIA_16_CLASSES, "mIoU13": SYNTHIA_13_CLASSES}
    assert not hasattr(MetadataCatalog.get("gta5_train"), "eval_class_subsets")


def test_missing_folder_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    for name, script in (("gta5_train", "prepare_gta5.py"),
                         ("synthia_train", "prepare_synthia.py")):
        with pytest.raises(DatasetNotFoundError) as e:
            DatasetCatalog.get(name)
        assert "DETECTRON2_DATASETS" in str(e.value) and script in str(e.value)
        assert os.path.join(str(tmp_path), name.split("_")[0]) in str(e.value)

    assert gta5.main(["--root", str(tmp_path), "--nproc", "1"]) == 2
    err = capsys.readouterr().err
    assert "gta5" in err and "DETECTRON2_DATASETS" in err and "prepare_gta5.py" in err
    _write_image(str(tmp_path / "gta5" / "images" / "00001.png"), np.random.default_rng(0))
    with pytest.raises(DatasetNotFoundError, match=r"gta5.labels' does not exist"):
        gta5.prepare_gta5(str(tmp_path), progress=False)


def test_half_extracted_tree_errors(gta5_root, synthia_root):
    root, _ = gta5_root
    os.remove(os.path.join(root, "gta5", "labels", "00003.png"))
    with pytest.raises(DatasetNotFoundError, match=r"half-extracted.*00003\.png") as e:
        gta5.prepare_gta5(root, progress=False)
    assert "DETECTRON2_DATASETS" in str(e.value) and "prepare_gta5.py" in str(e.value)

    os.remove(os.path.join(root, "synthia", "RGB", "0000001.png"))  # labels without images
    with pytest.raises(DatasetNotFoundError, match=r"label files have no image.*0000001\.png"):
        synthia.prepare_synthia(root, progress=False)


def test_non_palette_gta5_label_names_the_file(gta5_root):
    root, ids = gta5_root
    bad = os.path.join(root, "gta5", "labels", "00002.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(bad)  # an RGB colour mask
    with pytest.raises(LabelFormatError, match=r"00002\.png.*mode 'RGB'"):
        gta5.prepare_gta5(root, progress=False)


def test_damaged_converted_labels_are_replaced_not_skipped(gta5_root, synthia_root, capsys):
    """A re-run rewrites converted labels a crash or a full disk left empty or cut short."""
    root, ids = gta5_root
    gta5.prepare_gta5(root, progress=False)
    label_dir = os.path.join(root, "gta5", "labels")
    empty, cut = (os.path.join(label_dir, f"{s}_labelTrainIds.png") for s in ("00001", "00003"))
    open(empty, "wb").close()
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) // 2)
    again = gta5.prepare_gta5(root, progress=False)
    assert (again.converted, again.replaced, again.skipped) == (2, 2, N - 2)
    for stem, path in (("00001", empty), ("00003", cut)):
        np.testing.assert_array_equal(_read(path), _expected(ids[stem], CS_LABEL_TO_TRAIN))

    root, _ = synthia_root
    assert synthia.main(["--root", root, "--nproc", "1"]) == 0
    converted = os.path.join(root, "synthia", "GT", "LABELS", "0000002_labelTrainIds.png")
    with open(converted, "wb") as f:
        f.write(b"\0" * 64)
    assert synthia.main(["--root", root, "--nproc", "1"]) == 0
    assert "1 converted (1 empty or damaged file replaced), 2 already converted" in \
        capsys.readouterr().out
    assert _read(converted).shape == (H, W)


def test_damaged_downloaded_files_are_listed_before_converting(gta5_root, capsys):
    root, _ = gta5_root
    image = os.path.join(root, "gta5", "images", "00002.png")
    raw_label = os.path.join(root, "gta5", "labels", "00003.png")
    open(image, "wb").close()
    with open(raw_label, "wb") as f:
        f.write(b"<html>502 Bad Gateway</html>")
    assert gta5.main(["--root", root, "--nproc", "1"]) == 2
    err = capsys.readouterr().err
    assert "2 of 6 images and raw labels of GTA5 are empty or damaged" in err
    assert f"{image}: 0 bytes" in err and f"{raw_label}: not a PNG file" in err
    assert "download.visinf.tu-darmstadt.de" in err and "prepare_gta5.py" in err
    assert not [n for n in os.listdir(os.path.dirname(raw_label)) if "TrainIds" in n]
