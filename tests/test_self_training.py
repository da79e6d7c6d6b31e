"""SelfTrainingUDA: which networks learn, the teacher's modes, exact resume (several
processes: test_distributed.py)."""
import os

import pytest
import torch
from torch import nn

from detectron2.engine import HookBase
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from duda_d2.engine import UDATrainer
from duda_d2.uda.teacher import teacher_mode
from helpers import config

CONFIG = "configs/synthetic/self_training.yaml"
SMALL = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 32, "INPUT.CROP.SIZE", (32, 32),
         "DATALOADER.NUM_WORKERS", 0, "DATALOADER.SOURCE_IMS_PER_BATCH", 2,
         "DATALOADER.TARGET_IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "TEST.EVAL_PERIOD", 0]


def _batch(n, size=32, labelled=True):
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8)}
        if labelled:
            d["sem_seg"] = torch.randint(0, 19, (size, size))
        out.append(d)
    return out


def start_iteration(model, iteration):
    """What the trainer's hooks do before step ``iteration`` (schedule, then EMA)."""
    model.schedule(iteration)
    return model.update_teachers(iteration)


def test_losses_and_only_the_student_learns():
    cfg = config(CONFIG, *SMALL, "MODEL.UDA.FD_LAMBDA", 0.005,
                 "MODEL.UDA.FD_RANDOM_REFERENCE", True, "MODEL.UDA.MIC_LAMBDA", 1.0)
    model = build_model(cfg).train()
    with EventStorage(0) as storage:
        assert start_iteration(model, 0) == 0.0
        losses = model((_batch(2), _batch(2, labelled=False)))
        sum(losses.values()).backward()
        assert "pseudo_quality" in storage.latest()
    assert set(losses) == {"loss_src", "loss_tgt", "loss_fd", "loss_mic"}
    assert all(p.grad is not None for p in model.pair.student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.pair.teacher.parameters())
    assert all(p.grad is None for p in model.pair.imagenet_reference.parameters())
    # At iteration 0 the teacher is a copy of the student (alpha = 0).
    for t, s in zip(model.pair.teacher.parameters(), model.pair.student.parameters()):
        torch.testing.assert_close(t, s)


def test_teacher_mode_uses_batch_statistics_and_keeps_running_ones():
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.9)).train()
    x = torch.randn(4, 3, 5, 5) * 3 + 2
    with teacher_mode(net, "batch"):
        out = net(x)
    assert net.training and net[1].training  # modes restored
    torch.testing.assert_close(net[0].running_mean, torch.zeros(3))  # untouched
    torch.testing.assert_close(out, nn.functional.batch_norm(x, None, None, training=True),
                               atol=1e-4, rtol=1e-4)
    with teacher_mode(net, "running"):
        torch.testing.assert_close(net(x), x, atol=1e-3, rtol=1e-4)  # stats 0/1, no dropout


class _Crash(HookBase):
    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise RuntimeError("simulated crash")


def _train(out, resume=False, crash_at=None, max_iter=4):
    cfg = config(CONFIG, *SMALL, "SOLVER.MAX_ITER", max_iter, "SOLVER.CHECKPOINT_PERIOD", 2,
                 "OUTPUT_DIR", out, "MODEL.UDA.MIC_LAMBDA", 1.0)
    seed_all_rng(cfg.SEED)  # as tools/train_net.py's default_setup: same initial weights
    trainer = UDATrainer(cfg)
    if crash_at is not None:
        trainer.register_hooks([_Crash(crash_at)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["model"]


def test_resume_after_a_crash_ends_with_the_same_weights(synthetic_root, tmp_path):
    reference = _train(str(tmp_path / "a"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(str(tmp_path / "b"), crash_at=2)
    assert open(tmp_path / "b" / "last_checkpoint").read() == "model_0000001.pth"
    resumed = _train(str(tmp_path / "b"), resume=True)
    assert set(resumed) == set(reference) and any(k.startswith("pair.teacher.") for k in reference)
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0, msg=key)


def test_debug_panels_reach_the_event_storage(synthetic_root):
    model = build_model(config(CONFIG, *SMALL, "MODEL.UDA.DEBUG_PERIOD", 2)).train()
    for iteration, expected in ((1, []), (2, ["debug/source_label", "debug/target_pseudo_label",
                                              "debug/mix_mask", "debug/mix_prediction"])):
        with EventStorage(iteration) as storage:
            start_iteration(model, iteration)
            model((_batch(2), _batch(2, labelled=False)))
            assert [name for name, _, _ in storage._vis_data] == expected
            assert all(img.shape == (3, 32, 32) and 0 <= img.min() and img.max() <= 1
                       for _, img, _ in storage._vis_data)
