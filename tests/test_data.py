import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog

from duda_d2.data import InvalidLabelError, SemSegDatasetMapper, load_label_map
from duda_d2.data.datasets import DatasetNotFoundError
from helpers import config


def _write_pair(tmp_path, label):
    image = np.random.default_rng(0).integers(0, 255, (*label.shape, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(label).save(tmp_path / "lab.png")
    return {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}


def test_missing_dataset_names_folder_env_var_and_script(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as err:
        DatasetCatalog.get("synthetic_uda_source_train")
    message = str(err.value)
    assert "nowhere/synthetic_uda/source/train" in message
    assert "DETECTRON2_DATASETS" in message and "datasets/prepare_synthetic.py" in message


def test_importing_the_plugin_does_not_import_offline_preparation():
    code = ("import sys, duda_d2; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['duda_d2', 'prep']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_label_values_outside_train_ids_name_the_file(tmp_path):
    Image.fromarray(np.array([[0, 19], [255, 18]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(InvalidLabelError, match=r"bad\.png.*\[19\]"):
        load_label_map(str(tmp_path / "bad.png"))
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InvalidLabelError, match="single-channel"):
        load_label_map(str(tmp_path / "rgb.png"))


def test_train_mapper_resizes_crops_and_keeps_labels_aligned(tmp_path):
    label = np.zeros((60, 80), np.uint8)
    label[:, 40:] = 13
    record = _write_pair(tmp_path, label)
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "INPUT.SOURCE_SIZE", (30, 40),
                 "INPUT.CROP.SIZE", (16, 16), "INPUT.RANDOM_FLIP", "none")
    out = SemSegDatasetMapper(cfg, is_train=True)(record)
    assert out["image"].shape == (3, 16, 16) and out["image"].dtype == torch.uint8
    assert out["sem_seg"].shape == (16, 16) and out["sem_seg"].dtype == torch.long
    assert set(out["sem_seg"].unique().tolist()) <= {0, 13}
    assert (out["height"], out["width"]) == (60, 80)


def test_test_mapper_resizes_image_and_reports_original_size(tmp_path):
    record = _write_pair(tmp_path, np.zeros((60, 80), np.uint8))
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "INPUT.TEST_SIZE", (30, 40))
    out = SemSegDatasetMapper(cfg, is_train=False, with_labels=False)(record)
    assert out["image"].shape == (3, 30, 40) and "sem_seg" not in out
    assert (out["height"], out["width"]) == (60, 80)


def test_mapper_rejects_bad_labels(tmp_path):
    record = _write_pair(tmp_path, np.full((20, 20), 40, np.uint8))
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "INPUT.CROP.SIZE", (16, 16))
    with pytest.raises(InvalidLabelError, match="lab.png"):
        SemSegDatasetMapper(cfg, is_train=True)(record)


# ------------------------------------------------ damaged and missing files at start-up (item 10)
def _tiny_synthetic(root):
    from helpers import load_dataset_script
    load_dataset_script("prepare_synthetic").prepare_synthetic(
        str(root), num_source=3, num_target=1, num_val=1, height=24, width=32, nproc=1,
        progress=False)
    return root / "synthetic_uda" / "source" / "train"


def _truncate(path, keep=None):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2 if keep is None else keep])


def test_file_problem_reads_headers_only(tmp_path):
    from duda_d2.data.datasets.file_check import file_problem
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(good)
    assert file_problem(str(good)) is None
    trailing = tmp_path / "trailing.png"
    trailing.write_bytes(good.read_bytes() + b"\0" * 100)  # data after the end chunk: readable
    assert file_problem(str(trailing)) is None
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert file_problem(str(empty)) == "0 bytes"
    html = tmp_path / "html.png"
    html.write_bytes(b"<html>404 Not Found</html>")
    assert "not a PNG" in file_problem(str(html))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-20])
    assert "truncated" in file_problem(str(cut))
    zeros = tmp_path / "zeros.png"
    zeros.write_bytes(b"\0" * 1000)  # what a crash can leave of a preallocated file
    assert "not a PNG" in file_problem(str(zeros))
    assert "does not exist" in file_problem(str(tmp_path / "nothing.png"))
    jpeg = tmp_path / "x.jpg"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(jpeg)
    assert file_problem(str(jpeg)) is None  # other formats: PIL's header check
    (tmp_path / "bad.jpg").write_bytes(b"garbage" * 10)
    assert "cannot identify" in file_problem(str(tmp_path / "bad.jpg"))


def test_empty_or_damaged_files_are_an_error_at_start_up(tmp_path, monkeypatch):
    source = _tiny_synthetic(tmp_path)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    (source / "images" / "000000.png").write_bytes(b"")
    _truncate(source / "labels" / "000001.png")
    (source / "images" / "000002.png").write_bytes(b"GIF89a not a png")
    with pytest.raises(DatasetNotFoundError) as err:
        DatasetCatalog.get("synthetic_uda_source_train")
    message = str(err.value)
    assert "3 of 6 image and label files of synthetic_uda_source_train" in message
    assert f"{source / 'images' / '000000.png'}: 0 bytes" in message
    assert f"{source / 'labels' / '000001.png'}: truncated" in message
    assert f"{source / 'images' / '000002.png'}: not a PNG" in message
    assert "datasets/prepare_synthetic.py" in message and "DETECTRON2_DATASETS" in message
    assert len(DatasetCatalog.get("synthetic_uda_target_val")) == 1  # other splits unaffected

    # the prepare script replaces what it wrote, instead of counting it as "already there"
    from helpers import load_dataset_script
    stats = load_dataset_script("prepare_synthetic").prepare_synthetic(
        str(tmp_path), num_source=3, num_target=1, num_val=1, height=24, width=32, nproc=1,
        progress=False)
    assert (stats["rendered"], stats["files_written"], stats["replaced"]) == (3, 3, 3)
    assert len(DatasetCatalog.get("synthetic_uda_source_train")) == 3


def test_many_damaged_files_list_the_first_few_and_the_count(tmp_path, monkeypatch):
    from duda_d2.data.datasets.layout import DatasetFileError
    from duda_d2.data.datasets.project_datasets import SYNTHETIC_UDA
    from duda_d2.data.datasets.registration import load_split_records
    source = _tiny_synthetic(tmp_path)
    for path in sorted(source.rglob("*.png")):
        path.write_bytes(b"")
    with pytest.raises(DatasetFileError) as err:
        load_split_records(SYNTHETIC_UDA, "synthetic_uda_source_train", str(tmp_path))
    message = str(err.value)
    assert "6 of 6 image and label files" in message
    assert message.count(": 0 bytes") == 5 and "... and 1 more" in message


def _layout_tree(layout, root):
    """One labelled image per folder pair of every split of ``layout`` (32x64 PNGs)."""
    image = np.zeros((32, 64, 3), np.uint8)
    written = {}
    for split in layout.splits:
        for image_folder, label_folder in split.folders:
            base = os.path.join(layout.dataset_dir(root), image_folder, "seq")
            os.makedirs(base, exist_ok=True)
            Image.fromarray(image).save(os.path.join(base, "seq_0" + layout.image_suffix))
            if label_folder is not None:
                label = os.path.join(layout.dataset_dir(root), label_folder, "seq",
                                     "seq_0" + layout.label_suffix)
                os.makedirs(os.path.dirname(label), exist_ok=True)
                Image.fromarray(image[..., 0]).save(label)
                written[split.name] = label
    return written


@pytest.mark.parametrize("name", ["synthetic", "gta5", "synthia", "cityscapes", "acdc",
                                  "dark_zurich"])
def test_labels_without_images_are_an_error_for_every_dataset(tmp_path, name):
    """A missing image (images archive half-extracted) is an error, as a missing label is."""
    from duda_d2.data.datasets.project_datasets import PROJECT_DATASETS
    from duda_d2.data.datasets.registration import load_split_records
    layout = next(d for d in PROJECT_DATASETS if d.folder.startswith(name))
    labels = _layout_tree(layout, str(tmp_path))
    for split in layout.splits:
        assert len(load_split_records(layout, split.name, str(tmp_path))) == len(split.folders)
    for split_name, label in labels.items():
        # a second label in the same folder whose image is missing
        orphan = os.path.join(os.path.dirname(label),
                              os.path.basename(label).replace("seq_0", "seq_1"))
        os.link(label, orphan)
        with pytest.raises(DatasetNotFoundError) as err:
            load_split_records(layout, split_name, str(tmp_path))
        message = str(err.value)
        assert f"1 label of {split_name} has no image" in message, message
        assert orphan in message and layout.prepare_script in message
        os.remove(orphan)
