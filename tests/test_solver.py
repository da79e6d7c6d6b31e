import pytest
import torch

from detectron2.modeling import build_model

from duda_d2.engine.solver import build_lr_scheduler, build_optimizer
from helpers import config


def _setup(*opts):
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, *opts)
    model = build_model(cfg)
    return cfg, model, build_optimizer(cfg, model)


def _group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_adamw_head_lr_times_ten_and_no_decay_on_norms():
    cfg, model, optimizer = _setup()
    assert isinstance(optimizer, torch.optim.AdamW)
    base = cfg.SOLVER.BASE_LR
    head_w = model.network.head.linear_pred.weight
    enc_w = model.network.backbone.patch_embed1.proj.weight
    norm_w = model.network.backbone.norm1.weight
    bn_w = model.network.head.linear_fuse[1].weight
    assert _group_of(optimizer, head_w)["lr"] == pytest.approx(10 * base)
    assert _group_of(optimizer, enc_w)["lr"] == pytest.approx(base)
    assert _group_of(optimizer, enc_w)["weight_decay"] == cfg.SOLVER.WEIGHT_DECAY
    assert _group_of(optimizer, norm_w)["weight_decay"] == 0.0
    assert _group_of(optimizer, bn_w)["weight_decay"] == 0.0


def test_warmup_then_poly_decay():
    cfg, model, optimizer = _setup("SOLVER.MAX_ITER", 100, "SOLVER.WARMUP_ITERS", 10,
                                   "SOLVER.WARMUP_FACTOR", 0.0)
    scheduler = build_lr_scheduler(cfg, optimizer)
    group = _group_of(optimizer, model.network.backbone.patch_embed1.proj.weight)
    lrs = []
    for _ in range(100):
        lrs.append(group["lr"])
        optimizer.step()
        scheduler.step()
    base = cfg.SOLVER.BASE_LR
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(0.5 * base * 0.9)  # halfway up to the poly value at 10 %
    assert lrs[50] == pytest.approx(base * 0.5)
    assert lrs[90] == pytest.approx(base * 0.1)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="LION"):
        _setup("SOLVER.OPTIMIZER", "LION")
