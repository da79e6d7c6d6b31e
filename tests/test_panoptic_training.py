"""Panoptic DUDA end to end on a tiny synthetic panoptic benchmark: the losses of every network,
exact resume after a crash, and PQ of the small student by cityscapesscripts' evaluation."""
import glob
import json
import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from duda_d2.engine import UDATrainer
from helpers import config, dataset_root, load_dataset_script
from test_self_training import _Crash, start_iteration

CONFIG = "configs/synthetic_panoptic/duda.yaml"
TINY = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "INPUT.CROP.SIZE", (32, 32),
        "MODEL.INS_EMBED_HEAD.PROJECT_CHANNELS", [8, 8], "MODEL.INS_EMBED_HEAD.ASPP_CHANNELS", 16,
        "MODEL.INS_EMBED_HEAD.CONVS_DIM", 16, "MODEL.INS_EMBED_HEAD.HEAD_CHANNELS", 8,
        "DATALOADER.NUM_WORKERS", 0, "DATALOADER.SOURCE_IMS_PER_BATCH", 2,
        "DATALOADER.TARGET_IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "TEST.EVAL_PERIOD", 0,
        "MODEL.DUDA.LARGE_NETWORK_OPTS", ["MODEL.MIT.VARIANT", "b0",
                                          "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32",
                                          "MODEL.SEM_SEG_HEAD.FUSION", "conv1x1",
                                          "MODEL.INS_EMBED_HEAD.EMBED_DIM", "16",
                                          "MODEL.INS_EMBED_HEAD.FUSION", "conv1x1"],
        "MODEL.DUDA.PRE_ADAPTATION_ITERS", 1, "MODEL.DUDA.RAMP_ITERS", 2,
        # Every teacher pixel and centre counts, so pseudo instances exist from the first step.
        "MODEL.UDA.PSEUDO_THRESHOLD", 0.0, "MODEL.PANOPTIC_DEEPLAB.PSEUDO_CENTER_THRESHOLD", 0.0,
        "MODEL.DUDA.BETA_MAX", 1.0, "MODEL.UDA.MIC_LAMBDA", 1.0, "MODEL.UDA.MIC_BLOCK_SIZE", 8]


@pytest.fixture(scope="module")
def panoptic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("panoptic_datasets"))
    load_dataset_script("prepare_synthetic").prepare_synthetic(
        root, nproc=1, progress=False, panoptic=True, num_source=4, num_target=4, num_val=2,
        height=48, width=64)
    with dataset_root(root):
        yield root


def _batch(n, labelled=True, size=32):
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8)}
        if labelled:
            pan = torch.zeros(size, size, dtype=torch.long)  # road
            pan[4:12, 4:12] = 13001                         # two cars
            pan[16:28, 10:20] = 13002
            pan[0:2] = 10000                                 # sky
            d["pan_seg"], d["sem_seg"] = pan, pan // 1000
        out.append(d)
    return out


def test_every_network_learns_the_panoptic_task(panoptic_root):
    model = build_model(config(CONFIG, *TINY)).train()
    with EventStorage(0) as storage:
        start_iteration(model, 2)  # in the ramp: β = 0.5, KD on
        losses = model((_batch(2), _batch(2, labelled=False)))
        sum(losses.values()).backward()
        logged = storage.latest()
    assert set(losses) == {"loss_src_large", "loss_tgt_large", "loss_src_small",
                           "loss_tgt_small", "loss_kd", "loss_mic"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_kd"] > 0
    assert logged["pseudo_quality"][0] == pytest.approx(1.0)
    # Gradients reach both students' instance heads (centre and offset predictors), never the
    # teacher.
    for student in (model.small_student, model.large_pair.student):
        head = student.instance_head
        assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.large_pair.teacher.parameters())


def _train(out, resume=False, crash=False):
    cfg = config(CONFIG, *TINY, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2,
                 "OUTPUT_DIR", out)
    seed_all_rng(cfg.SEED)
    trainer = UDATrainer(cfg)
    if crash:
        trainer.register_hooks([_Crash(2)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return cfg, torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["model"]


def test_panoptic_duda_resumes_exactly_and_evaluates_pq(panoptic_root, tmp_path):
    cfg, reference = _train(str(tmp_path / "a"))
    with pytest.raises(RuntimeError):
        _train(str(tmp_path / "b"), crash=True)
    _, resumed = _train(str(tmp_path / "b"), resume=True)
    assert any(k.startswith("small_student.instance_head.") for k in reference)
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0, msg=key)
    # The final evaluation: PQ of the small student by cityscapesscripts, and the semantic
    # branch's mIoU, in metrics.json; predictions as panoptic PNGs + JSON for re-scoring.
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.json")]
    final = {k: v for row in rows for k, v in row.items()}
    for key in ("panoptic_seg/PQ", "panoptic_seg/PQ_th", "panoptic_seg/PQ_st",
                "panoptic_seg/SQ", "panoptic_seg/RQ", "panoptic_seg/PQ-car", "sem_seg/mIoU"):
        assert 0.0 <= final[key] <= 100.0 or final[key] != final[key], key
    folder = tmp_path / "a" / "inference" / "synthetic_uda_target_val_panoptic" / "panoptic"
    assert len(glob.glob(str(folder / "**" / "*.png"), recursive=True)) == 2
    assert glob.glob(str(folder / "*.json"))


def test_large_networks_and_extra_teachers_must_share_the_task(tmp_path):
    with pytest.raises(ValueError, match="MODEL.TASK 'panoptic' but the small student's"):
        build_model(config("configs/synthetic/duda.yaml", "MODEL.DUDA.LARGE_NETWORK",
                           "configs/networks/mit_b5_daformer_panoptic.yaml"))
    with pytest.raises(ValueError, match="describes a 'panoptic' network"):
        build_model(config("configs/synthetic/duda.yaml",
                           "MODEL.DUDA.EXTRA_TEACHER_CONFIGS",
                           ["configs/networks/mit_b0_segformer_panoptic.yaml"],
                           "MODEL.DUDA.EXTRA_TEACHER_WEIGHTS", [str(tmp_path / "t.pth")],
                           "MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS", [0.5]))
