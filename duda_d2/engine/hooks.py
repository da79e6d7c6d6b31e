"""Training hooks: per-iteration seeding (exact resume), the EMA teacher update and the
iteration-dependent training state (gradual distillation, frozen large pair, debug panels).

Order before each step (``UDATrainer.build_hooks``): seed, schedule, EMA; Detectron2's
checkpointer saves *after* a step, so the teacher saved at iteration t is the EMA of the
weights left by step t-1 (the last step's weights never enter it), and ``--resume`` redoes the
EMA of step t+1 exactly as the uninterrupted run.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["SeedEachIterationHook", "TeacherEMAHook", "TrainingScheduleHook"]


class SeedEachIterationHook(HookBase):
    """Seed torch, numpy and random from (seed, iteration, rank) before every step.

    The model's own random draws (dropout, drop-path, ClassMix classes, colour jitter, MIC
    masks) then depend on the iteration only, so a resumed run repeats them exactly.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        state = np.random.SeedSequence([self.seed, 3, self.trainer.iter, comm.get_rank()])
        value = int(state.generate_state(1)[0])
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


class TrainingScheduleHook(HookBase):
    """Before each step: ``model.schedule(t)`` sets what depends on the iteration (``β(t)``,
    the frozen large pair, debug panels) and returns what is logged (``distill_beta``)."""

    def before_step(self):
        values = self.trainer.model.schedule(self.trainer.iter)
        if values:
            self.trainer.storage.put_scalars(**values)


class TeacherEMAHook(HookBase):
    """Before each step: the EMA teacher(s) from the weights the previous step left, with
    ``α(t) = min(1 - 1/(t+1), α)``; logs ``ema_alpha`` (1 when the teacher is frozen)."""

    def before_step(self):
        alpha = self.trainer.model.update_teachers(self.trainer.iter)
        self.trainer.storage.put_scalar("ema_alpha", alpha)
