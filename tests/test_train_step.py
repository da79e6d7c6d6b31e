"""Per-stage backward changes memory, not numbers: the same losses and gradients as one
backward of the summed losses, for DUDA and self-training, and the same weights after
training steps through ``UDATrainStep``."""
import copy

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from duda_d2.engine import UDATrainer
from duda_d2.engine.distributed import _buckets
from duda_d2.engine.train_step import amp_dtype
from helpers import config
from test_duda import CONFIG as DUDA_CONFIG
from test_duda import TINY
from test_self_training import CONFIG as ST_CONFIG
from test_self_training import SMALL, start_iteration

RECIPE = ["MODEL.UDA.FD_LAMBDA", 0.005, "MODEL.UDA.FD_RANDOM_REFERENCE", True,
          "MODEL.UDA.MIC_LAMBDA", 1.0, "MODEL.UDA.MIC_BLOCK_SIZE", 8]


def _batch(seed, n=2, size=32):
    g = torch.Generator().manual_seed(seed)
    source = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g),
               "sem_seg": torch.randint(0, 19, (size, size), generator=g)} for _ in range(n)]
    target = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)}
              for _ in range(n)]
    return source, target


def _losses_and_grads(model, iteration, per_stage):
    model.zero_grad(set_to_none=True)
    start_iteration(model, iteration)
    torch.manual_seed(123)  # augmentation, ClassMix, MIC masks, dropout: the same draws
    with EventStorage(iteration):
        if per_stage:
            calls = []

            def backward(loss):
                calls.append(loss.item())
                loss.backward()

            losses = model(_batch(0), backward=backward)
            assert len(calls) > 1 and not any(v.requires_grad for v in losses.values())
        else:
            losses = model(_batch(0))
            sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.item() for k, v in losses.items()}, grads


@pytest.mark.parametrize("meta_arch", ["DUDA", "SelfTrainingUDA"])
def test_per_stage_backward_gives_the_same_losses_and_gradients(meta_arch):
    cfg = (config(DUDA_CONFIG, *TINY, *RECIPE) if meta_arch == "DUDA"
           else config(ST_CONFIG, *SMALL, *RECIPE))
    reference = build_model(cfg).train()
    staged = copy.deepcopy(reference)
    iteration = 2  # DUDA: mid-ramp, so KD from both large networks is on
    losses_a, grads_a = _losses_and_grads(reference, iteration, per_stage=False)
    losses_b, grads_b = _losses_and_grads(staged, iteration, per_stage=True)
    assert losses_a == losses_b
    if meta_arch == "DUDA":
        assert losses_a["loss_kd"] > 0 and {"loss_fd", "loss_mic"} <= set(losses_a)
    assert set(grads_a) == set(grads_b) and not any(".teacher." in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7,
                                   msg=name)


def _train_weights(tmp_path, per_stage):
    cfg = config(DUDA_CONFIG, *TINY, "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 100,
                 "SOLVER.BACKWARD_PER_STAGE", per_stage, "SOLVER.CLIP_GRADIENTS.ENABLED", True,
                 "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 1.0,
                 "OUTPUT_DIR", str(tmp_path / str(per_stage)))
    seed_all_rng(cfg.SEED)
    trainer = UDATrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.model.state_dict()


def test_trainer_steps_match_the_single_backward_path(synthetic_root, tmp_path):
    single = _train_weights(tmp_path, False)
    staged = _train_weights(tmp_path, True)
    assert set(single) == set(staged)
    for key in single:
        torch.testing.assert_close(staged[key], single[key], rtol=1e-4, atol=1e-5, msg=key)


def test_amp_precision_names_and_gradient_buckets():
    assert amp_dtype("bfloat16") is torch.bfloat16 and amp_dtype("float16") is torch.float16
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION"):
        amp_dtype("fp8")
    tensors = [torch.zeros(4), torch.zeros(4, dtype=torch.float16), torch.zeros(2)]
    # A new bucket whenever the dtype changes, never a mixed-dtype bucket.
    assert [len(b) for b in _buckets(tensors)] == [1, 1, 1]
    assert [len(b) for b in _buckets([torch.zeros(3)] * 3)] == [3]


def test_bfloat16_autocast_trains_on_the_cpu(synthetic_root, tmp_path):
    cfg = config(DUDA_CONFIG, *TINY, "SOLVER.MAX_ITER", 1, "SOLVER.AMP.ENABLED", True,
                 "SOLVER.AMP.PRECISION", "bfloat16", "OUTPUT_DIR", str(tmp_path))
    trainer = UDATrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = copy.deepcopy(trainer.model.small_student.state_dict())
    trainer.train()
    assert trainer._trainer.grad_scaler is None
    after = trainer.model.small_student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
