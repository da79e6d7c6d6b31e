"""Pinned numbers of a few training steps of the demo DUDA config and the self-training config.

A refactor must leave every logged loss and state the same (losses to 1e-6, weights' checksums
to 1e-6 relative). A change that alters the numbers on purpose regenerates the pins in the same
commit (``DUDA_UPDATE_PINS=1 pytest tests/test_regression_pins.py``) and says why.
Pinned at: issue 17 (UDA configs train on synthetic_uda_target_train_fit: the last sixth of
target train is the held-out selection split); before that issue 11 (MIC/DAFormer fidelity, DDP).
"""
import json
import os

import pytest
import torch

from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng

from duda_d2.engine import UDATrainer
from helpers import REPO, config

PINS = os.path.join(REPO, "tests", "pins", "regression.json")
COMMON = ["INPUT.CROP.SIZE", (32, 32), "DATALOADER.NUM_WORKERS", 0,
          "DATALOADER.SOURCE_IMS_PER_BATCH", 2, "DATALOADER.TARGET_IMS_PER_BATCH", 2,
          "SOLVER.WARMUP_ITERS", 1, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 100,
          "TEST.EVAL_PERIOD", 0, "MODEL.DEVICE", "cpu", "SEED", 7]
RUNS = {
    # beta > 0 from iteration 1 (pre-adaptation 1, ramp 2): every stage within 4 iterations.
    "duda_demo": ("configs/demo/duda_synthetic.yaml", [
        "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16,
        "MODEL.DUDA.LARGE_NETWORK_OPTS", ["MODEL.MIT.VARIANT", "b0", "MODEL.SEM_SEG_HEAD.FUSION",
                                          "conv1x1", "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32"],
        "MODEL.DUDA.PRE_ADAPTATION_ITERS", 1, "MODEL.DUDA.RAMP_ITERS", 2,
        "MODEL.UDA.PSEUDO_THRESHOLD", 0.1]),
    "self_training": ("configs/baselines/self_training_synthetic.yaml", [
        "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.UDA.PSEUDO_THRESHOLD", 0.1,
        "MODEL.UDA.FD_LAMBDA", 0.005, "MODEL.UDA.FD_RANDOM_REFERENCE", True,
        "MODEL.UDA.FD_CLASSES", list(range(19)), "MODEL.UDA.FD_PURITY", 0.3,
        "MODEL.UDA.MIC_LAMBDA", 1.0, "MODEL.UDA.MIC_BLOCK_SIZE", 8]),
}
NOT_PINNED = ("time", "data_time", "rank_data_time", "eta_seconds")


class _Record(HookBase):
    def __init__(self):
        self.rows = []

    def after_step(self):
        latest = self.trainer.storage.latest()
        self.rows.append({k: float(v) for k, (v, _) in sorted(latest.items())
                          if k not in NOT_PINNED})


def _checksums(module: torch.nn.Module) -> dict:
    values = [v.double() for v in module.state_dict().values() if v.is_floating_point()]
    return {"sum": float(sum(v.sum() for v in values)),
            "abs_sum": float(sum(v.abs().sum() for v in values))}


def _networks(model):
    """The deployed/student network, its teacher and a large student, by role (the attribute
    names may change in a refactor; the roles may not)."""
    roles = {"student": model.inference_network(), "teacher": model.teacher}
    if hasattr(model, "large_student"):
        roles["large_student"] = model.large_student
    return roles


def _run(name, out):
    path, opts = RUNS[name]
    cfg = config(path, *COMMON, *opts, "OUTPUT_DIR", out)
    seed_all_rng(cfg.SEED)
    trainer = UDATrainer(cfg)
    record = _Record()
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=False)
    trainer.train()
    return {"steps": record.rows,
            "checksums": {k: _checksums(v) for k, v in _networks(trainer.model).items()}}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_numbers_are_pinned(name, synthetic_root, tmp_path):
    result = _run(name, str(tmp_path / name))
    if os.environ.get("DUDA_UPDATE_PINS"):
        pins = json.load(open(PINS)) if os.path.exists(PINS) else {}
        pins[name] = result
        with open(PINS, "w") as f:
            json.dump(pins, f, indent=1, sort_keys=True)
    pinned = json.load(open(PINS))[name]
    assert len(result["steps"]) == len(pinned["steps"]) == 4
    for step, (got, want) in enumerate(zip(result["steps"], pinned["steps"])):
        assert set(got) == set(want), f"iteration {step}: logged names changed"
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), f"it {step} {key}"
    for role, sums in pinned["checksums"].items():
        for kind, value in sums.items():
            assert result["checksums"][role][kind] == pytest.approx(value, rel=1e-6), \
                f"{role} {kind}"
