"""Optimiser and learning-rate schedule of the UDA recipe (AdamW, head lr x10, warm-up + poly)."""
from __future__ import annotations

import torch
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from torch import nn

from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["build_optimizer", "build_lr_scheduler", "is_head_parameter"]


def is_head_parameter(name: str) -> bool:
    """Parameters of a decoder head (``...head.<param>``, ``...instance_head.<param>``) get
    ``HEAD_LR_MULTIPLIER``."""
    name = f".{name}"
    return ".head." in name or ".instance_head." in name


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) with weight decay ``SOLVER.WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM`` on
    normalisation layers, ``WEIGHT_DECAY_BIAS`` on biases, and the head lr multiplier.

    Deliberate difference: DAFormer/MIC zero the decay of parameters whose *name* contains
    ``norm`` (the MiT encoder's LayerNorms), which leaves the decoder's BatchNorms (named
    ``bn``) at 0.01; Detectron2's ``WEIGHT_DECAY_NORM`` applies to every normalisation layer by
    type. The decoder's BatchNorm weights are a few thousand of 85 M parameters."""
    head_mult = cfg.SOLVER.HEAD_LR_MULTIPLIER
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        lr_factor_func=lambda name: head_mult if is_head_parameter(name) else 1.0,
    )
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        optim_cls, kwargs = torch.optim.AdamW, {"betas": tuple(cfg.SOLVER.BETAS)}
    elif name == "SGD":
        optim_cls = torch.optim.SGD
        kwargs = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} unknown; use ADAMW or SGD")
    return maybe_add_gradient_clipping(cfg, optim_cls)(params, lr=cfg.SOLVER.BASE_LR, **kwargs)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """``WarmupPolyLR``: linear warm-up over ``WARMUP_ITERS`` then ``(1 - t/T)^POLY_POWER``;
    any other name goes to Detectron2's own schedulers."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    sched = WarmupParamScheduler(
        PolynomialDecayParamScheduler(1.0, cfg.SOLVER.POLY_POWER),
        cfg.SOLVER.WARMUP_FACTOR,
        min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0),
        cfg.SOLVER.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=cfg.SOLVER.MAX_ITER)
