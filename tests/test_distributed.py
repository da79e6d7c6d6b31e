"""Two training processes (gloo, CPU, Detectron2's ``launch``) on PyTorch's DDP: one model on
every process, evaluation that matches a one-process evaluation of the checkpoint, and
gradient averaging that matches one process with the same global batch."""
import json
import os
import sys

import pytest
import torch

from detectron2.engine import launch
from detectron2.utils import comm

from duda_d2.engine import UDATrainer
from duda_d2.engine.distributed import convert_sync_batchnorm
from helpers import REPO, config

sys.path.insert(0, os.path.join(REPO, "tools"))
import train_net  # noqa: E402

DUDA_TINY = [
    "MODEL.SEM_SEG_HEAD.EMBED_DIM", "16", "INPUT.CROP.SIZE", "(32, 32)",
    "DATALOADER.NUM_WORKERS", "0", "DATALOADER.SOURCE_IMS_PER_BATCH", "4",
    "DATALOADER.TARGET_IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "1",
    "MODEL.DUDA.LARGE_NETWORK_OPTS", "['MODEL.MIT.VARIANT', 'b0', 'MODEL.SEM_SEG_HEAD.EMBED_DIM', '32']",
    "MODEL.DUDA.PRE_ADAPTATION_ITERS", "1", "MODEL.DUDA.RAMP_ITERS", "1",
    "MODEL.UDA.PSEUDO_THRESHOLD", "0.0", "MODEL.UDA.MIC_LAMBDA", "1.0",
    "MODEL.UDA.MIC_BLOCK_SIZE", "8", "MODEL.UDA.FD_LAMBDA", "0.005",
    "MODEL.UDA.FD_RANDOM_REFERENCE", "True", "SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "3",
    "SOLVER.CHECKPOINT_PERIOD", "100"]


def _train_worker(argv, out):
    """tools/train_net.py's setup and training, then this process's full state dict."""
    cfg = train_net.setup(train_net.default_argument_parser().parse_args(argv))
    trainer = UDATrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    torch.save(trainer.model.state_dict(), os.path.join(out, f"state_rank{comm.get_rank()}.pth"))


def _launch(argv, out):
    os.makedirs(out, exist_ok=True)
    launch(_train_worker, 2, dist_url="auto", args=(argv, out))
    return [torch.load(os.path.join(out, f"state_rank{r}.pth"), weights_only=False)
            for r in range(2)]


def _final_miou(out):
    merged = {}
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            merged.update(json.loads(line))
    return merged["sem_seg/mIoU"]


def test_two_processes_hold_one_model_and_evaluate_like_one(synthetic_root, tmp_path):
    out = str(tmp_path / "duda")
    config_file = os.path.join(REPO, "configs/synthetic/duda.yaml")
    rank0, rank1 = _launch(["--config-file", config_file, "OUTPUT_DIR", out, *DUDA_TINY], out)
    # Parameters, EMA teacher, FD reference, BatchNorm statistics of all three networks and
    # the inconsistency state: identical on both processes.
    assert set(rank0) == set(rank1) and "distillation.inconsistency.disagreement" in rank0
    assert any(k.endswith("running_mean") for k in rank0)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    assert rank0["distillation.inconsistency.seen"].any()
    # The 2-process in-training evaluation equals a 1-process --eval-only of model_final.pth.
    results = train_net.main(train_net.default_argument_parser().parse_args([
        "--config-file", config_file, "--eval-only", "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"), *DUDA_TINY]))
    assert results["sem_seg"]["mIoU"] == pytest.approx(_final_miou(out), abs=1e-9)


# Deterministic: source-only, no dropout or drop-path, MiT-B0 + DeepLabV2 head (no BatchNorm),
# loss averaged over all pixels: 2 x 2 images must train exactly as 1 x 4.
DETERMINISTIC = ["MODEL.SEM_SEG_HEAD.NAME", "DeepLabV2Head", "MODEL.SEM_SEG_HEAD.IN_FEATURES",
                 "['res5']", "MODEL.MIT.DROP_PATH_RATE", "0.0", "INPUT.CROP.SIZE", "(32, 32)",
                 "SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "1", "SOLVER.MAX_ITER", "3",
                 "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0",
                 "SOLVER.CHECKPOINT_PERIOD", "100"]


def test_two_processes_average_gradients_like_one_process(synthetic_root, tmp_path):
    from detectron2.utils.env import seed_all_rng

    config_file = os.path.join(REPO, "configs/synthetic/source_only.yaml")
    one = str(tmp_path / "one")
    cfg = config("configs/synthetic/source_only.yaml", *DETERMINISTIC)
    cfg.OUTPUT_DIR = one
    seed_all_rng(cfg.SEED)  # rank 0 of the 2-process run is seeded the same (SEED + rank)
    trainer = UDATrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    reference = trainer.model.state_dict()

    two = str(tmp_path / "two")
    rank0, rank1 = _launch(["--config-file", config_file, "OUTPUT_DIR", two, *DETERMINISTIC], two)
    for key in reference:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(rank0[key], reference[key], rtol=0, atol=1e-5, msg=key)


def test_sync_batchnorm_is_cuda_only():
    from detectron2.modeling import build_model

    model = build_model(config("configs/synthetic/source_only.yaml"))
    with pytest.raises(ValueError, match="MODEL.SYNC_BN needs CUDA"):
        convert_sync_batchnorm(model, "cpu")
