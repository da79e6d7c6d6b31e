"""DUDA end to end on tiny networks: who learns, the stages, the frozen large pair, extra
teachers, exact resume and small-student evaluation."""
import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from duda_d2.engine import UDATrainer
from helpers import config
from test_self_training import start_iteration

CONFIG = "configs/synthetic/duda.yaml"
TINY = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "INPUT.CROP.SIZE", (32, 32),
        "DATALOADER.NUM_WORKERS", 0, "DATALOADER.SOURCE_IMS_PER_BATCH", 2,
        "DATALOADER.TARGET_IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1, "TEST.EVAL_PERIOD", 0,
        "MODEL.DUDA.LARGE_NETWORK_OPTS", ["MODEL.MIT.VARIANT", "b0",
                                          "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32"],
        "MODEL.DUDA.PRE_ADAPTATION_ITERS", 1, "MODEL.DUDA.RAMP_ITERS", 2,
        "MODEL.UDA.PSEUDO_THRESHOLD", 0.0, "MODEL.DUDA.BETA_MAX", 1.0]


def _batch(n, labelled=True):
    out = []
    for _ in range(n):
        d = {"image": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)}
        if labelled:
            d["sem_seg"] = torch.randint(0, 19, (32, 32))
        out.append(d)
    return out


def _step(model, iteration):
    with EventStorage(iteration) as storage:
        storage.put_scalar("ema_alpha", start_iteration(model, iteration))
        storage.put_scalar("distill_beta", model.distillation.beta)
        model.zero_grad(set_to_none=True)
        losses = model((_batch(2), _batch(2, labelled=False)))
        sum(losses.values()).backward()
        return losses, storage.latest()


def _has_grad(module):
    return [p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()]


def test_stages_losses_and_gradients():
    model = build_model(config(CONFIG, *TINY)).train()
    # Pre-adaptation (t=0): beta 0, no KD; all students learn, never the teacher.
    losses, logged = _step(model, 0)
    assert set(losses) == {"loss_src_large", "loss_tgt_large", "loss_src_small",
                           "loss_tgt_small", "loss_kd"}
    assert logged["distill_beta"][0] == 0.0 and losses["loss_kd"].item() == 0.0
    assert {"pseudo_quality", "ema_alpha", "inconsistency_max"} <= set(logged)
    assert all(_has_grad(model.large_pair.student)) and all(_has_grad(model.small_student))
    assert all(p.grad is None and not p.requires_grad
               for p in model.large_pair.teacher.parameters())
    # Ramp (t=2 of pre 1 + ramp 2): beta 0.5, KD on.
    losses, logged = _step(model, 2)
    assert logged["distill_beta"][0] == pytest.approx(0.5) and losses["loss_kd"].item() > 0
    assert all(p.grad is None for p in model.large_pair.teacher.parameters())
    # The inconsistency state moved and its weights average 1 over seen classes.
    inconsistency = model.distillation.inconsistency
    c = inconsistency.weights()
    assert inconsistency.seen.any() and c[inconsistency.seen].mean() == pytest.approx(1.0)


def test_frozen_large_pair_gets_no_gradient_and_a_fixed_teacher():
    model = build_model(config(CONFIG, *TINY, "MODEL.DUDA.FREEZE_LARGE_AFTER_PRE_ADAPTATION",
                               True)).train()
    _step(model, 0)
    teacher_before = [p.clone() for p in model.large_pair.teacher.parameters()]
    buffers_before = {k: v.clone() for k, v in model.large_pair.student.state_dict().items()}
    losses, logged = _step(model, 3)  # >= pre + ramp: frozen
    assert set(losses) == {"loss_src_small", "loss_tgt_small", "loss_kd"}
    assert logged["ema_alpha"][0] == 1.0  # the frozen teacher is not averaged any more
    assert not any(_has_grad(model.large_pair.student)) and all(_has_grad(model.small_student))
    for before, after in zip(teacher_before, model.large_pair.teacher.parameters()):
        assert torch.equal(before, after)
    # Its no-grad pass on the mix runs in teacher mode: BatchNorm statistics untouched.
    for key, value in model.large_pair.student.state_dict().items():
        assert torch.equal(value, buffers_before[key]), key
    assert model.large_pair.student.training  # and its modes are restored afterwards


def test_extra_frozen_teacher_from_a_trained_checkpoint(tmp_path):
    # A "released adapted model": a plain UDASegmentor checkpoint of another architecture.
    teacher_cfg = config("configs/networks/mit_b5_daformer.yaml", "MODEL.MIT.VARIANT", "b0",
                         "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.DEVICE", "cpu")
    torch.save({"model": build_model(teacher_cfg).state_dict()}, tmp_path / "teacher.pth")
    extra_cfg = tmp_path / "teacher.yaml"
    extra_cfg.write_text('_BASE_: "{}"\nMODEL:\n  MIT:\n    VARIANT: "b0"\n'
                         '  SEM_SEG_HEAD:\n    EMBED_DIM: 16\n'.format(
                             os.path.abspath("configs/networks/mit_b5_daformer.yaml")))
    model = build_model(config(
        CONFIG, *TINY, "MODEL.DUDA.EXTRA_TEACHER_CONFIGS", [str(extra_cfg)],
        "MODEL.DUDA.EXTRA_TEACHER_WEIGHTS", [str(tmp_path / "teacher.pth")],
        "MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS", [0.5],
        "MODEL.DUDA.PSEUDO_LABEL_FROM_ALL_TEACHERS", True)).train()
    assert len(model.extra_teachers) == 1
    losses, _ = _step(model, 2)
    assert losses["loss_kd"].item() > 0
    assert all(p.grad is None for p in model.extra_teachers.parameters())
    with pytest.raises(FileNotFoundError, match="EXTRA_TEACHER_WEIGHTS"):
        build_model(config(CONFIG, *TINY, "MODEL.DUDA.EXTRA_TEACHER_CONFIGS", [str(extra_cfg)],
                           "MODEL.DUDA.EXTRA_TEACHER_WEIGHTS", [str(tmp_path / "nope.pth")],
                           "MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS", [0.5]))


def _train(out, resume=False, crash=False):
    cfg = config(CONFIG, *TINY, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2,
                 "OUTPUT_DIR", out, "TEST.EVAL_PERIOD", 0)
    seed_all_rng(cfg.SEED)
    trainer = UDATrainer(cfg)
    if crash:
        from test_self_training import _Crash
        trainer.register_hooks([_Crash(2)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["model"]


def test_resume_is_exact_including_inconsistency_state(synthetic_root, tmp_path):
    reference = _train(str(tmp_path / "a"))
    with pytest.raises(RuntimeError):
        _train(str(tmp_path / "b"), crash=True)
    resumed = _train(str(tmp_path / "b"), resume=True)
    assert "distillation.inconsistency.disagreement" in reference
    assert any(k.startswith("large_pair.student.") for k in reference)
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=0, msg=key)


def test_evaluates_the_small_student_by_default(synthetic_root, tmp_path):
    cfg = config(CONFIG, *TINY, "MODEL.DEVICE", "cpu")
    model = build_model(cfg).eval()
    assert model.inference_network() is model.small_student
    with torch.no_grad():
        out = model(_batch(1, labelled=False))
    assert out[0]["sem_seg"].shape == (19, 32, 32)
    results = UDATrainer.test(cfg, model)
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    cfg.MODEL.DUDA.INFERENCE_NETWORK = "teacher"
    assert build_model(cfg).inference_network().__class__.__name__ == "SegmentationNetwork"


def test_the_large_pair_does_not_inherit_the_small_students_imagenet_file(tmp_path):
    """MODEL.BACKBONE.WEIGHTS is the small student's file; the large networks take theirs from
    MODEL.DUDA.LARGE_NETWORK(_OPTS) only (a B0 file would not fit a B1, or would silently
    initialise a B0 large pair)."""
    from duda_d2.modeling.meta_arch.duda import DUDA
    small = build_model(config(CONFIG, *TINY, "MODEL.UDA.FD_RANDOM_REFERENCE", True)).small_student
    weights = str(tmp_path / "b0.pth")
    torch.save({"model": small.backbone.state_dict()}, weights)
    cfg = config(CONFIG, *TINY, "MODEL.BACKBONE.WEIGHTS", weights)
    assert DUDA.large_network_config(cfg).MODEL.BACKBONE.WEIGHTS == ""
    with pytest.raises(ValueError, match="large networks"):  # FD has no ImageNet reference
        build_model(config(CONFIG, *TINY, "MODEL.BACKBONE.WEIGHTS", weights,
                           "MODEL.UDA.FD_LAMBDA", 0.005))
    opts = ["MODEL.DUDA.LARGE_NETWORK_OPTS", ["MODEL.MIT.VARIANT", "b0",
                                              "MODEL.SEM_SEG_HEAD.EMBED_DIM", "32",
                                              "MODEL.BACKBONE.WEIGHTS", weights]]
    assert DUDA.large_network_config(config(CONFIG, *TINY, *opts)).MODEL.BACKBONE.WEIGHTS == \
        weights
