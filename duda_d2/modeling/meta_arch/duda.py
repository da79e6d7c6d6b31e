"""``DUDA``: a large EMA teacher, a large student and the small (deployed) student.

One training step, in order (each piece one hop from here):
1. before the step, ``TrainingScheduleHook`` -> ``schedule``: ``β(t)``, whether the large pair
   is frozen; ``TeacherEMAHook`` -> ``update_teachers``: the large teacher's EMA;
2. ``uda_batch`` (segmentor.py): normalised source/target images, source targets;
3. the large teacher labels the clean target (``MeanTeacherPair``, mean_teacher.py), with the
   extra teachers if ``PSEUDO_LABEL_FROM_ALL_TEACHERS``; the task (tasks/semantic.py) turns
   outputs into pseudo-targets;
4. the large pair self-trains as DAFormer/MIC (``MeanTeacherPair.student_losses``: source,
   ClassMix, MIC), or, frozen, only produces its mixed batch and outputs;
5. the small student learns from source, the mix and KD (``SmallStudentDistillation``,
   distillation.py), reusing every teacher signal of 3-4 (no extra large forward pass).
``small_student`` is what evaluation and export use by default.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from ...uda.teacher import teacher_mode
from ..debug_panels import put_debug_panels
from ..network import (SegmentationNetwork, build_segmentation_network, load_network_weights,
                       sub_network_config)
from ..tasks import DenseTargets
from .checkpoint_keys import key_renamer
from .distillation import DistillationSettings, SmallStudentDistillation, build_extra_teachers
from .loss_stages import LossStages
from .mean_teacher import MeanTeacherPair, SelfTrainingSettings, check_feature_distance_reference
from .segmentor import SegmentorBase
from .self_training import debug_metadata

__all__ = ["DUDA", "large_network_opts"]


def _large_network_key(cfg) -> str:
    """How a message names the large networks' config file."""
    return f"MODEL.DUDA.LARGE_NETWORK={cfg.MODEL.DUDA.LARGE_NETWORK}"

Outputs = Dict[str, torch.Tensor]


def large_network_opts(cfg) -> list:
    """``MODEL.DUDA.LARGE_NETWORK_OPTS`` after the run's number of classes: the classes are the
    data's, not the network's (a network description's base says 19; a run on your own class
    list has its own), so only the user's opts may change it."""
    return ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            *cfg.MODEL.DUDA.LARGE_NETWORK_OPTS]


@META_ARCH_REGISTRY.register()
class DUDA(SegmentorBase):
    uses_target_data = True

    @configurable
    def __init__(self, *, small_student: SegmentationNetwork,
                 large_student: SegmentationNetwork, settings: SelfTrainingSettings,
                 distillation: DistillationSettings,
                 extra_teachers: Sequence[SegmentationNetwork] = (), debug_metadata=None,
                 large_network_weights: str = "", **kwargs):
        """``large_network_weights``: a trained large network (``MODEL.DUDA.
        LARGE_NETWORK_WEIGHTS``) both the large student and the EMA teacher start from."""
        super().__init__(**kwargs)
        if len(distillation.extra_teacher_weights) != len(extra_teachers):
            raise ValueError("one loss weight per extra teacher is needed")
        self.small_student = small_student
        self.large_pair = MeanTeacherPair(large_student, task=self.task, settings=settings,
                                          pixel_statistics=self.pixel_statistics,
                                          passes=self.passes)
        self.distillation = SmallStudentDistillation(task=self.task, settings=distillation,
                                                     passes=self.passes)
        if large_network_weights:
            # After the pair is built: FD's ImageNet reference stays the ImageNet encoder.
            load_network_weights(self.large_pair.student, large_network_weights,
                                 "MODEL.DUDA.LARGE_NETWORK_WEIGHTS")
            self.large_pair.teacher.load_state_dict(self.large_pair.student.state_dict())
        self.extra_teachers = nn.ModuleList(extra_teachers)
        self.debug_metadata = debug_metadata
        self.debug_this_step = False
        self.large_pair_frozen = False
        # Checkpoints written before the redesign (issue 12) named the parts differently.
        self._register_load_state_dict_pre_hook(key_renamer({
            "network.": "small_student.", "large_student.": "large_pair.student.",
            "teacher.": "large_pair.teacher.", "imnet_backbone.": "large_pair.imagenet_reference.",
            "class_disagreement": "distillation.inconsistency.disagreement",
            "class_seen": "distillation.inconsistency.seen"}))

    @classmethod
    def large_network_config(cls, cfg):
        d = cfg.MODEL.DUDA
        opts = large_network_opts(cfg)
        if d.LARGE_ACTIVATION_CHECKPOINTING:
            opts += ["MODEL.MIT.ACTIVATION_CHECKPOINTING", True,
                     "MODEL.SEM_SEG_HEAD.ACTIVATION_CHECKPOINTING", True]
        return sub_network_config(cfg, d.LARGE_NETWORK, opts, "MODEL.DUDA.LARGE_NETWORK")

    @classmethod
    def from_config(cls, cfg) -> dict:
        large = cls.large_network_config(cfg)
        if large.MODEL.SEM_SEG_HEAD.NUM_CLASSES != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError("the large networks and the small student must predict the same "
                             "classes (MODEL.SEM_SEG_HEAD.NUM_CLASSES)")
        if large.MODEL.TASK != cfg.MODEL.TASK:
            raise ValueError(f"the large networks ({_large_network_key(cfg)}) are for MODEL.TASK "
                             f"{large.MODEL.TASK!r} but the small student's config for "
                             f"{cfg.MODEL.TASK!r}: use a network file of the same task (e.g. "
                             f"configs/networks/mit_b5_daformer_panoptic.yaml for panoptic)")
        # FD regularises the large student: its backbone weights must be ImageNet's.
        check_feature_distance_reference(
            large, "MODEL.BACKBONE.WEIGHTS of the large networks (MODEL.DUDA.LARGE_NETWORK_OPTS)")
        return {**cls.base_arguments(cfg), "small_student": build_segmentation_network(cfg),
                "large_student": build_segmentation_network(large),
                "settings": SelfTrainingSettings.from_config(cfg),
                "distillation": DistillationSettings.from_config(cfg),
                "extra_teachers": build_extra_teachers(cfg),
                "debug_metadata": debug_metadata(cfg),
                "large_network_weights": cfg.MODEL.DUDA.LARGE_NETWORK_WEIGHTS}

    @property
    def large_student(self) -> SegmentationNetwork:
        return self.large_pair.student

    @property
    def teacher(self) -> SegmentationNetwork:
        """The large EMA teacher that labels the target."""
        return self.large_pair.teacher

    def trainable_networks(self) -> List[SegmentationNetwork]:
        return [self.small_student, self.large_pair.student]

    def inference_network(self) -> SegmentationNetwork:
        return {"small_student": self.small_student, "large_student": self.large_pair.student,
                "teacher": self.large_pair.teacher}[self.distillation.settings.inference_network]

    # ------------------------------------------------------------------ called by hooks
    def schedule(self, iteration: int) -> Dict[str, float]:
        """The iteration-dependent state of the next step: ``β(t)``, the frozen large pair,
        debug panels; returns what is logged."""
        settings = self.distillation.settings
        self.large_pair_frozen = settings.large_pair_frozen(iteration)
        period = self.large_pair.settings.debug_period
        self.debug_this_step = period > 0 and iteration % period == 0
        return {"distill_beta": self.distillation.set_iteration(iteration)}

    def update_teachers(self, iteration: int) -> float:
        """The large teacher's EMA (``α(t)``); a frozen pair's teacher stays: ``α = 1``."""
        if self.distillation.settings.large_pair_frozen(iteration):
            return 1.0
        return self.large_pair.update_teacher(iteration)

    # ------------------------------------------------------------------ training
    def training_losses(self, batched_inputs, stages: LossStages) -> None:
        """Large pair first (its graphs freed stage by stage), then the small student."""
        source, target = batched_inputs
        batch = self.uda_batch(source, target)
        teacher_outputs = self.large_pair.teacher_outputs(batch.target_images)
        extra_outputs = self.extra_teacher_outputs(batch.target_images)
        pseudo = self.pseudo_targets(teacher_outputs, extra_outputs)
        if self.large_pair_frozen:
            mixed = self.large_pair.frozen_student_outputs(batch, pseudo)
        else:
            mixed = self.large_pair.student_losses(batch, pseudo, stages, suffix="_large")
        self.distillation.small_student_losses(self.small_student, batch, pseudo, mixed,
                                               [teacher_outputs, *extra_outputs], stages)
        get_event_storage().put_scalar("pseudo_quality", pseudo.quality)
        if self.debug_this_step and self.debug_metadata is not None:
            put_debug_panels(get_event_storage(), self.debug_metadata, self.task, source, target,
                             pseudo, mixed)

    def extra_teacher_outputs(self, target_images: torch.Tensor) -> List[Outputs]:
        outputs = []
        for teacher in self.extra_teachers:
            with teacher_mode(teacher, "running"):
                outputs.append(teacher(target_images))
        return outputs

    def pseudo_targets(self, teacher_outputs: Outputs,
                       extra_outputs: List[Outputs]) -> DenseTargets:
        """From the EMA teacher, or from the weighted mixture of all teachers."""
        settings = self.distillation.settings
        if settings.pseudo_label_from_all_teachers and extra_outputs:
            teacher_outputs = self.task.ensemble([teacher_outputs, *extra_outputs],
                                                 settings.clean_target_weights)
        return self.large_pair.pseudo_targets(teacher_outputs)
