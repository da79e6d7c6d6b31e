"""The small student's side of DUDA: its losses, gradual distillation ``β(t)``, the
inconsistency class weights (whose state it owns), and the frozen extra teachers.

Per step: the task's supervised loss on source (one stage); on the large pair's ClassMix batch
the pseudo-target loss weighted ``1 - β`` and pixel-weighted by the inconsistency weights, and
knowledge distillation weighted ``β`` from the large student's outputs on the mix (``π_G``)
and from the EMA teacher's and the extra teachers' outputs on the clean target (``π_T``, ...)
-- one stage, as the mixed and clean-target passes share one backward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.utils.events import get_event_storage

from ...uda.distill import InconsistencyWeights
from ...uda.distributed import sum_across_processes
from ...uda.schedule import SCHEDULES, distill_beta
from ...uda.teacher import frozen_copy
from ..network import (SegmentationNetwork, build_segmentation_network, load_network_weights,
                       sub_network_config)
from ..tasks import DenseTargets, MixedBatch, Task, UDABatch
from .loss_stages import LossStages
from .training_passes import TrainingPasses

__all__ = ["DistillationSettings", "SmallStudentDistillation", "build_extra_teachers",
           "INFERENCE_NETWORKS"]

INFERENCE_NETWORKS = ("small_student", "large_student", "teacher")
Outputs = Dict[str, torch.Tensor]


@dataclass
class DistillationSettings:
    """The small student's recipe (``MODEL.DUDA.*``); iteration counts already resolved."""

    pre_adaptation_iters: int
    ramp_iters: int
    beta_max: float = 1.0
    schedule: str = "linear"
    kd_temperature: float = 1.0
    ema_teacher_weight: float = 0.5
    large_student_weight: float = 0.5
    extra_teacher_weights: Sequence[float] = ()
    pseudo_label_from_all_teachers: bool = False
    inconsistency_gamma: float = 1.0
    inconsistency_momentum: float = 0.99
    inconsistency_clip: Sequence[float] = (0.5, 3.0)
    freeze_large_after_pre_adaptation: bool = False
    inference_network: str = "small_student"

    @classmethod
    def from_config(cls, cfg) -> "DistillationSettings":
        d = cfg.MODEL.DUDA
        quarter = cfg.SOLVER.MAX_ITER // 4
        settings = cls(
            pre_adaptation_iters=d.PRE_ADAPTATION_ITERS if d.PRE_ADAPTATION_ITERS >= 0 else quarter,
            ramp_iters=d.RAMP_ITERS if d.RAMP_ITERS >= 0 else quarter,
            beta_max=d.BETA_MAX, schedule=d.SCHEDULE, kd_temperature=d.KD_TEMPERATURE,
            ema_teacher_weight=d.EMA_TEACHER_WEIGHT, large_student_weight=d.LARGE_STUDENT_WEIGHT,
            extra_teacher_weights=tuple(d.EXTRA_TEACHER_LOSS_WEIGHTS),
            pseudo_label_from_all_teachers=d.PSEUDO_LABEL_FROM_ALL_TEACHERS,
            inconsistency_gamma=d.INCONSISTENCY_GAMMA,
            inconsistency_momentum=d.INCONSISTENCY_MOMENTUM,
            inconsistency_clip=tuple(d.INCONSISTENCY_CLIP),
            freeze_large_after_pre_adaptation=d.FREEZE_LARGE_AFTER_PRE_ADAPTATION,
            inference_network=d.INFERENCE_NETWORK)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"MODEL.DUDA.SCHEDULE={self.schedule!r}; use one of {SCHEDULES}")
        if self.inference_network not in INFERENCE_NETWORKS:
            raise ValueError(f"MODEL.DUDA.INFERENCE_NETWORK={self.inference_network!r}; use one "
                             f"of {INFERENCE_NETWORKS}")

    def beta(self, iteration: int) -> float:
        return distill_beta(iteration, self.pre_adaptation_iters, self.ramp_iters,
                            self.beta_max, self.schedule)

    def large_pair_frozen(self, iteration: int) -> bool:
        return (self.freeze_large_after_pre_adaptation
                and iteration >= self.pre_adaptation_iters + self.ramp_iters)

    @property
    def clean_target_weights(self) -> List[float]:
        """``π_T`` of the EMA teacher, then each extra teacher's, on the clean target."""
        return [self.ema_teacher_weight, *self.extra_teacher_weights]

    def clean_target_kd(self, beta: float) -> bool:
        """Whether any teacher distils on the clean target at this ``β``."""
        return beta > 0 and any(w > 0 for w in self.clean_target_weights)


def build_extra_teachers(cfg) -> List[SegmentationNetwork]:
    """Frozen, separately trained teachers of any architecture (config + weights each)."""
    d = cfg.MODEL.DUDA
    counts = {len(d.EXTRA_TEACHER_CONFIGS), len(d.EXTRA_TEACHER_WEIGHTS),
              len(d.EXTRA_TEACHER_LOSS_WEIGHTS)}
    if len(counts) != 1:
        raise ValueError("MODEL.DUDA.EXTRA_TEACHER_CONFIGS, EXTRA_TEACHER_WEIGHTS and "
                         "EXTRA_TEACHER_LOSS_WEIGHTS must list one entry per extra teacher")
    teachers = []
    for i, (config_file, weights) in enumerate(zip(d.EXTRA_TEACHER_CONFIGS,
                                                   d.EXTRA_TEACHER_WEIGHTS)):
        key = f"MODEL.DUDA.EXTRA_TEACHER_CONFIGS[{i}]"
        # Its whole weights follow: no ImageNet file is needed, even one its config names.
        sub = sub_network_config(cfg, config_file, ["MODEL.BACKBONE.WEIGHTS", ""], key)
        if sub.MODEL.TASK != cfg.MODEL.TASK:
            raise ValueError(f"{key}={config_file} describes a {sub.MODEL.TASK!r} network but "
                             f"this run's MODEL.TASK is {cfg.MODEL.TASK!r}: an extra teacher "
                             f"must predict what the students learn")
        network = build_segmentation_network(sub)
        load_network_weights(network, weights, f"MODEL.DUDA.EXTRA_TEACHER_WEIGHTS[{i}]")
        teachers.append(frozen_copy(network))
    return teachers


class SmallStudentDistillation(nn.Module):
    """The small student's losses at the current ``β`` (``set_iteration``), and the
    inconsistency class weights ``c`` it up-weights poorly adapted classes with."""

    def __init__(self, *, task: Task, settings: DistillationSettings,
                 passes: TrainingPasses):
        super().__init__()
        self.task, self.settings, self.passes = task, settings, passes
        self.inconsistency = InconsistencyWeights(
            task.num_classes, gamma=settings.inconsistency_gamma,
            momentum=settings.inconsistency_momentum, clip=settings.inconsistency_clip)
        self.beta = 0.0

    def set_iteration(self, iteration: int) -> float:
        """``β(t)`` for this step's losses; returned for logging."""
        self.beta = self.settings.beta(iteration)
        return self.beta

    def small_student_losses(self, small: SegmentationNetwork, batch: UDABatch,
                             pseudo: DenseTargets, mixed: MixedBatch,
                             clean_target_teachers: Sequence[Outputs],
                             stages: LossStages) -> None:
        """Two stages: source; then mixed target (``1 - β``) + KD (``β``).
        ``clean_target_teachers``: the EMA teacher's outputs, then each extra teacher's."""
        task, beta = self.task, self.beta
        source_outputs = self.passes(small, batch.source_images, last=False)
        stages.add({"loss_src_small": task.supervised_loss(source_outputs, batch.source_targets)})
        clean_kd = self.settings.clean_target_kd(beta)
        # The mixed and clean-target passes share one backward: the last of them reduces.
        mix_outputs = self.passes(small, mixed.images, last=not clean_kd)
        target_outputs = self.clean_target_outputs(small, batch.target_images, clean_kd)
        if target_outputs is not None and self.inconsistency.enabled:
            self.inconsistency.update(
                task.predicted_classes(target_outputs, task.class_map(pseudo).shape[-2:]),
                task.class_map(pseudo), task.ignore_value, sum_counts=sum_across_processes)
        c = self.inconsistency.weights()
        c_mix = task.class_pixel_weights(c, mixed.targets)
        loss_tgt = (1 - beta) * task.supervised_loss(mix_outputs, mixed.targets,
                                                     class_weight=c_mix)
        kd = self.kd_loss(mix_outputs, target_outputs, mixed, pseudo, clean_target_teachers, c,
                          c_mix)
        stages.add({"loss_tgt_small": loss_tgt, "loss_kd": beta * kd})
        get_event_storage().put_scalar("inconsistency_max", c.max().item())

    def clean_target_outputs(self, small: SegmentationNetwork, target_images: torch.Tensor,
                             clean_kd: bool) -> Optional[Outputs]:
        """The small student on the clean target: with gradients for KD, without them when
        only the inconsistency weights need its labels, else not at all."""
        if clean_kd:
            return self.passes(small, target_images, last=True)
        if self.inconsistency.enabled:
            with torch.no_grad():
                return small(target_images)
        return None

    def kd_loss(self, mix_outputs: Outputs, target_outputs: Optional[Outputs],
                mixed: MixedBatch, pseudo: DenseTargets, clean_target_teachers: Sequence[Outputs],
                c: torch.Tensor, c_mix: torch.Tensor) -> torch.Tensor:
        """``π_G · KD(large student on the mix) + Σ π · KD(teacher on the clean target)``,
        each pixel weighted by the inconsistency weight of its (pseudo-)label."""
        s, task = self.settings, self.task
        kd = task.zero_loss(mix_outputs)
        if self.beta <= 0:
            return kd
        tau = s.kd_temperature
        if s.large_student_weight > 0:
            kd = kd + s.large_student_weight * task.distillation_loss(
                mixed.student_outputs, mix_outputs, mixed.targets, c_mix, tau)
        if s.clean_target_kd(self.beta):
            c_target = task.class_pixel_weights(c, pseudo)
            for teacher, weight in zip(clean_target_teachers, s.clean_target_weights):
                if weight > 0:
                    kd = kd + weight * task.distillation_loss(teacher, target_outputs, pseudo,
                                                              c_target, tau)
        return kd
