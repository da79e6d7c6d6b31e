"""The benchmark protocol's pieces (issue 17): the held-out selection split, source-only encoder
pretraining (no target data may enter), and the selection rule of tools/benchmark_protocol.py."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec

from duda_d2.engine.pretraining import build_pretraining_loader, require_source_domain
from duda_d2.modeling.backbone.mit import build_mit_backbone
from duda_d2.modeling.network import load_backbone_weights
from duda_d2.prep.synthetic_scene_renderer import render_scene
from helpers import REPO, config, dataset_root, load_dataset_script

sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark_protocol  # noqa: E402
import pretrain_synthetic  # noqa: E402

PRETRAIN = "configs/synthetic/pretrain_source.yaml"


def test_the_heldout_split_is_the_end_of_target_train_and_never_trained_on(synthetic_root):
    whole = [r["image_id"] for r in DatasetCatalog.get("synthetic_uda_target_train")]
    fit = [r["image_id"] for r in DatasetCatalog.get("synthetic_uda_target_train_fit")]
    heldout = DatasetCatalog.get("synthetic_uda_target_heldout")
    assert fit + [r["image_id"] for r in heldout] == whole and len(heldout) == 8 - 6
    assert all("sem_seg_file_name" in r for r in heldout)  # labelled: it scores selection
    assert MetadataCatalog.get("synthetic_uda_target_heldout").domain == "target"
    for path in ("configs/synthetic/self_training.yaml", "configs/synthetic/duda.yaml",
                 "configs/synthetic_pretrained/duda.yaml"):
        cfg = config(path)
        assert cfg.DATASETS.TARGET_TRAIN == ("synthetic_uda_target_train_fit",), path
        assert "synthetic_uda_target_heldout" not in cfg.DATASETS.TEST


@pytest.mark.parametrize("dataset", ["synthetic_uda_target_train", "synthetic_uda_target_val",
                                     "synthetic_uda_target_heldout", "cityscapes_fine_sem_seg_train"])
def test_the_pretraining_loader_refuses_any_dataset_that_is_not_source(dataset):
    cfg = config(PRETRAIN, "DATASETS.TRAIN", ("synthetic_uda_source_pretrain", dataset))
    with pytest.raises(ValueError, match=f"source-domain images only.*'{dataset}'"):
        build_pretraining_loader(cfg)
    cfg = config(PRETRAIN, "DATASETS.TARGET_TRAIN", ("synthetic_uda_target_train",))
    with pytest.raises(ValueError, match="must not name target data"):
        build_pretraining_loader(cfg)
    require_source_domain(["synthetic_uda_source_pretrain", "synthetic_uda_source_train"])


def test_pretraining_scenes_are_source_style_and_no_benchmark_scene(tmp_path):
    prepare = load_dataset_script("prepare_synthetic")
    stats = prepare.prepare_source_pretraining(str(tmp_path), nproc=1, progress=False,
                                               num_images=3)
    assert stats["rendered"] == 3
    folder = tmp_path / "synthetic_uda_pretrain"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["style"] == "source" and meta["num_images"] == 3
    import cv2
    for i in range(3):
        seed = prepare.scene_seed(0, prepare.PRETRAIN_SPLIT_INDEX, i)
        image, label = render_scene(seed, "source", 96, 128)
        written = cv2.imread(str(folder / "source/images" / f"{i:06d}.png"))[:, :, ::-1]
        np.testing.assert_array_equal(written, image)
        assert all(seed != prepare.scene_seed(0, s, j) for s in range(3) for j in range(600))
    with pytest.raises(prepare.MetaMismatchError):  # another recipe into the same folder
        prepare.prepare_source_pretraining(str(tmp_path), nproc=1, progress=False,
                                           num_images=4)


def test_pretrain_synthetic_writes_a_backbone_file_and_reuses_it(tmp_path, capsys):
    out, work = str(tmp_path / "pretrained"), str(tmp_path / "runs")
    argv = ["--variants", "b0", "--output-dir", out, "--work-dir", work, "--num-images", "4",
            "--nproc", "1", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.CROP.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"]
    with dataset_root(str(tmp_path / "data")):
        assert pretrain_synthetic.main(argv) == 0
        path = pretrain_synthetic.weights_path(out, "b0")
        saved = torch.load(path, weights_only=False)
        assert saved["recipe"]["variant"] == "b0" and saved["recipe"]["num_images"] == 4
        trained = torch.load(os.path.join(work, "mit_b0", "model_final.pth"),
                             weights_only=False)["model"]
        for key, value in saved["model"].items():  # the trained encoder, nothing else
            torch.testing.assert_close(value, trained[f"network.backbone.{key}"], rtol=0, atol=0)
        backbone = build_mit_backbone(config(PRETRAIN), ShapeSpec(channels=3))
        assert load_backbone_weights(backbone, path) == ([], [])
        capsys.readouterr()
        assert pretrain_synthetic.main(argv) == 0
        assert "is up to date" in capsys.readouterr().out


def test_selection_takes_the_best_heldout_miou_and_ties_go_to_the_default(tmp_path,
                                                                          monkeypatch):
    calls = []

    def fake_run(config_file, seed, run_dir, opts):
        calls.append((config_file, seed, opts))
        value = opts[opts.index("MODEL.DUDA.BETA_MAX") + 1]
        return {"sem_seg/mIoU": scores[value]}

    monkeypatch.setattr(benchmark_protocol.benchmark_uda, "run_one", fake_run)
    scores = {"0.5": 40.0, "1.0": 39.0}
    assert benchmark_protocol.select("scratch", str(tmp_path))["chosen"] == "0.5"
    assert json.loads((tmp_path / "selection.json").read_text())["chosen"] == "0.5"
    for config_file, seed, opts in calls:
        assert config_file.endswith("configs/synthetic/duda.yaml") and seed == 100
        assert opts[opts.index("DATASETS.TEST") + 1] == "('synthetic_uda_target_heldout',)"
        assert "synthetic_uda_target_val" not in " ".join(opts)
    scores = {"0.5": 40.05, "1.0": 40.0}
    assert benchmark_protocol.select("pretrained", str(tmp_path))["chosen"] == "1.0"
    assert calls[-1][0].endswith("configs/synthetic_pretrained/duda.yaml")
