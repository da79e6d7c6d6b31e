"""``DUDA``: a large EMA teacher, a large student and the small (deployed) student.

The large pair self-trains exactly as ``SelfTrainingUDA`` (DAFormer/MIC). The small student
learns from the source labels and, on the large pair's ClassMix batch, from the teacher's
pseudo-labels weighted ``1 - β(t)`` and from knowledge distillation weighted ``β(t)``:
the EMA teacher's logits on the clean target (``π_T``), the large student's logits on the
mixed image (``π_G``) and optional frozen extra teachers on the clean target. Inconsistency
class weights ``c`` up-weight the classes where the small student and the teacher disagree.
Every teacher signal is one the large pair computes anyway, so distillation adds no large
forward pass. ``self.network`` is the small student: evaluation and export use it by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from ...uda.distill import InconsistencyWeights, label_weights, weighted_kd
from ...uda.distributed import sum_across_processes
from ...uda.losses import weighted_cross_entropy
from ...uda.pseudo_label import PseudoLabels, ensemble_logits, pseudo_labels
from ...uda.schedule import SCHEDULES, distill_beta
from ..network import (SegmentationNetwork, build_segmentation_network, load_network_weights,
                       sub_network_config)
from .loss_stages import LossStages
from .self_training import (MixedTarget, SelfTrainingSettings, SelfTrainingUDA, frozen_copy,
                            teacher_mode)

__all__ = ["DUDA", "DistillationSettings"]

INFERENCE_NETWORKS = ("small_student", "large_student", "teacher")


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


def _build_extra_teachers(cfg) -> List[SegmentationNetwork]:
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
        sub = sub_network_config(cfg, config_file, ["MODEL.BACKBONE.WEIGHTS", ""], key)
        network = build_segmentation_network(sub)
        load_network_weights(network, weights, f"MODEL.DUDA.EXTRA_TEACHER_WEIGHTS[{i}]")
        teachers.append(frozen_copy(network))
    return teachers


@META_ARCH_REGISTRY.register()
class DUDA(SelfTrainingUDA):
    uses_target_data = True

    @configurable
    def __init__(self, *, network: SegmentationNetwork, large_student: SegmentationNetwork,
                 settings: SelfTrainingSettings, distillation: DistillationSettings,
                 extra_teachers: Sequence[SegmentationNetwork] = (), **kwargs):
        # UDASegmentor holds the small student as ``network``; the self-training machinery
        # (EMA teacher, FD reference, augmentation) is built around the large student.
        super(SelfTrainingUDA, self).__init__(network=network, **kwargs)
        self.large_student = large_student
        self.init_self_training(large_student, settings)
        self.distillation = distillation
        self.extra_teachers = nn.ModuleList(extra_teachers)
        if len(distillation.extra_teacher_weights) != len(self.extra_teachers):
            raise ValueError("one loss weight per extra teacher is needed")
        # Inconsistency state: buffers, so checkpoints (and --resume) carry it.
        self.register_buffer("class_disagreement", torch.zeros(self.num_classes))
        self.register_buffer("class_seen", torch.zeros(self.num_classes, dtype=torch.bool))
        self.inconsistency = InconsistencyWeights(
            self.class_disagreement, self.class_seen, distillation.inconsistency_gamma,
            distillation.inconsistency_momentum, distillation.inconsistency_clip)

    @classmethod
    def large_network_config(cls, cfg):
        d = cfg.MODEL.DUDA
        return sub_network_config(cfg, d.LARGE_NETWORK, d.LARGE_NETWORK_OPTS,
                                  "MODEL.DUDA.LARGE_NETWORK")

    @classmethod
    def feature_distance_network_config(cls, cfg):
        """FD regularises the large student: its backbone weights must be ImageNet's."""
        return (cls.large_network_config(cfg),
                "MODEL.BACKBONE.WEIGHTS of the large networks (MODEL.DUDA.LARGE_NETWORK_OPTS)")

    @classmethod
    def from_config(cls, cfg) -> dict:
        args = super().from_config(cfg)  # the small student from MODEL.* and MODEL.UDA.*
        large = cls.large_network_config(cfg)
        if large.MODEL.SEM_SEG_HEAD.NUM_CLASSES != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError("the large networks and the small student must predict the same "
                             "classes (MODEL.SEM_SEG_HEAD.NUM_CLASSES)")
        args["large_student"] = build_segmentation_network(large)
        args["distillation"] = DistillationSettings.from_config(cfg)
        args["extra_teachers"] = _build_extra_teachers(cfg)
        return args

    def _apply(self, fn, *args, **kwargs):
        # Buffers may be replaced by .to(device): keep the inconsistency state pointing at them.
        result = super()._apply(fn, *args, **kwargs)
        if hasattr(self, "inconsistency"):
            self.inconsistency.disagreement = self.class_disagreement
            self.inconsistency.seen = self.class_seen
        return result

    def trainable_networks(self) -> List[SegmentationNetwork]:
        return [self.network, self.large_student]

    # ------------------------------------------------------------------ inference
    def inference_network(self) -> nn.Module:
        return {"small_student": self.network, "large_student": self.large_student,
                "teacher": self.teacher}[self.distillation.inference_network]

    # ------------------------------------------------------------------ training
    def target_pseudo_labels(self, xt: torch.Tensor):
        """EMA-teacher logits, extra teachers' logits (clean target) and the pseudo-labels."""
        teacher_logits, pl = self.teacher_pseudo_labels(xt)
        extra = []
        for teacher in self.extra_teachers:
            with teacher_mode(teacher, "running"):
                extra.append(teacher(xt))
        d = self.distillation
        if d.pseudo_label_from_all_teachers and extra:
            s = self.settings
            mixture = ensemble_logits([teacher_logits] + extra,
                                      [d.ema_teacher_weight] + list(d.extra_teacher_weights))
            pl = pseudo_labels(mixture, s.pseudo_threshold, s.pseudo_weight_mode,
                               s.ignore_top, s.ignore_bottom)
        return teacher_logits, extra, pl

    def large_pair_losses(self, xs, ys, xt, pl: PseudoLabels, frozen: bool,
                          stages: LossStages) -> MixedTarget:
        """The large student's self-training stages (CE losses named ``*_large``); when the
        large pair is frozen, only the mixed batch and its no-grad large-student logits."""
        if frozen:  # a fixed network now: no dropout/drop-path, BatchNorm statistics untouched
            mixed = self.mixed_batch(xs, ys, xt, pl)
            with teacher_mode(self.large_student, self.settings.teacher_bn):
                mixed.logits = self.large_student(mixed.images)
            return mixed
        return self.student_losses(self.large_student, xs, ys, xt, pl, stages, suffix="_large")

    def small_student_losses(self, xs, ys, xt, pl: PseudoLabels, mixed: MixedTarget,
                             teacher_logits: torch.Tensor, extra_logits: List[torch.Tensor],
                             beta: float, stages: LossStages) -> None:
        """Source CE (one stage), then mixed-target CE weighted ``1 - β`` and KD weighted ``β``
        (a second stage: they share the small student's mixed-batch pass)."""
        d, small = self.distillation, self.network
        source_logits = self.passes(small, xs, last=False)
        stages.add({"loss_src_small": weighted_cross_entropy(source_logits, ys,
                                                             ignore_index=self.ignore_value)})
        clean_target_kd = beta > 0 and (d.ema_teacher_weight > 0 or any(
            w > 0 for w in d.extra_teacher_weights))
        # The mixed and clean-target passes share one backward: the last of them reduces.
        mix_logits = self.passes(small, mixed.images, last=not clean_target_kd)
        if clean_target_kd:
            target_logits = self.passes(small, xt, last=True)
        elif d.inconsistency_gamma > 0:
            with torch.no_grad():
                target_logits = small(xt)
        else:
            target_logits = None
        if target_logits is not None and d.inconsistency_gamma > 0:
            prediction = torch.nn.functional.interpolate(
                target_logits.detach(), size=pl.labels.shape[-2:], mode="bilinear",
                align_corners=False).argmax(1)
            self.inconsistency.update(prediction, pl.labels, self.ignore_value,
                                      sum_counts=sum_across_processes)
        c = self.inconsistency.weights()
        c_mix = label_weights(c, mixed.labels, self.ignore_value)
        loss_tgt = (1 - beta) * weighted_cross_entropy(
            mix_logits, mixed.labels, mixed.weight * c_mix, self.ignore_value)
        kd = mix_logits.sum() * 0.0
        if beta > 0:
            tau = d.kd_temperature
            c_target = label_weights(c, pl.labels, self.ignore_value)
            if d.large_student_weight > 0:
                kd = kd + d.large_student_weight * weighted_kd(mixed.logits, mix_logits, c_mix, tau)
            if clean_target_kd:
                teachers = [teacher_logits] + extra_logits
                weights = [d.ema_teacher_weight] + list(d.extra_teacher_weights)
                for logits, weight in zip(teachers, weights):
                    if weight > 0:
                        kd = kd + weight * weighted_kd(logits, target_logits, c_target, tau)
        stages.add({"loss_tgt_small": loss_tgt, "loss_kd": beta * kd})
        get_event_storage().put_scalar("inconsistency_max", c.max().item())

    def training_losses(self, source: List[dict], target: List[dict], iteration: int,
                        stages: LossStages) -> None:
        """Large pair first (its graphs freed stage by stage), then the small student."""
        d = self.distillation
        frozen = d.large_pair_frozen(iteration)
        # A frozen pair's teacher stays as it is: logged as alpha = 1.
        alpha = 1.0 if frozen else self.update_teacher(self.large_student, iteration)
        xs, ys, xt = self.prepare_batches(source, target)
        teacher_logits, extra_logits, pl = self.target_pseudo_labels(xt)
        mixed = self.large_pair_losses(xs, ys, xt, pl, frozen, stages)
        beta = d.beta(iteration)
        self.small_student_losses(xs, ys, xt, pl, mixed, teacher_logits, extra_logits, beta,
                                  stages)
        storage = get_event_storage()
        storage.put_scalars(pseudo_quality=pl.quality, distill_beta=beta, ema_alpha=alpha)
        self.keep_debug_visuals(iteration, source, target, pl, mixed)
