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
