"""``SelfTrainingUDA``: one mean-teacher pair trained the DAFormer/MIC way (the self-training
baselines). The step is ``MeanTeacherPair``'s; the hooks update the teacher before each step
(``TeacherEMAHook``) and say when to write debug panels (``TrainingScheduleHook``)."""
from __future__ import annotations

from typing import Dict, List

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from ..debug_panels import put_debug_panels
from ..network import SegmentationNetwork, build_segmentation_network
from .checkpoint_keys import key_renamer
from .loss_stages import LossStages
from .mean_teacher import MeanTeacherPair, SelfTrainingSettings, check_feature_distance_reference
from .segmentor import SegmentorBase

__all__ = ["SelfTrainingUDA", "debug_metadata"]


def debug_metadata(cfg):
    """Metadata (class names, colours) for debug panels, or None when they are off."""
    if cfg.MODEL.UDA.DEBUG_PERIOD <= 0:
        return None
    names = cfg.DATASETS.SOURCE_TRAIN or cfg.DATASETS.TRAIN
    return MetadataCatalog.get(names[0]) if names else None


@META_ARCH_REGISTRY.register()
class SelfTrainingUDA(SegmentorBase):
    """Student + EMA teacher (+ the frozen ImageNet encoder for FD), as ``self.pair``.

    Training input: ``(source_batch, target_batch)`` from ``build_uda_train_loader``. The
    teacher never receives gradients (DDP neither buckets nor reduces it) and is held in the
    module, so checkpoints carry it.
    """

    uses_target_data = True

    @configurable
    def __init__(self, *, student: SegmentationNetwork, settings: SelfTrainingSettings,
                 debug_metadata=None, **kwargs):
        super().__init__(**kwargs)
        if settings.inference_network not in ("student", "teacher"):
            raise ValueError(f"MODEL.UDA.INFERENCE_NETWORK={settings.inference_network!r}; "
                             f"use 'student' or 'teacher'")
        self.pair = MeanTeacherPair(student, task=self.task, settings=settings,
                                    pixel_statistics=self.pixel_statistics, passes=self.passes)
        self.debug_metadata = debug_metadata
        self.debug_this_step = False
        # Checkpoints written before the redesign (issue 12) named the networks differently.
        self._register_load_state_dict_pre_hook(key_renamer({
            "network.": "pair.student.", "teacher.": "pair.teacher.",
            "imnet_backbone.": "pair.imagenet_reference."}))

    @classmethod
    def from_config(cls, cfg) -> dict:
        check_feature_distance_reference(cfg, "MODEL.BACKBONE.WEIGHTS")
        return {**cls.base_arguments(cfg), "student": build_segmentation_network(cfg),
                "settings": SelfTrainingSettings.from_config(cfg),
                "debug_metadata": debug_metadata(cfg)}

    @property
    def student(self) -> SegmentationNetwork:
        return self.pair.student

    @property
    def teacher(self) -> SegmentationNetwork:
        """The EMA teacher that labels the target."""
        return self.pair.teacher

    def trainable_networks(self) -> List[SegmentationNetwork]:
        return [self.pair.student]

    def inference_network(self) -> SegmentationNetwork:
        return self.pair.student if self.pair.settings.inference_network == "student" \
            else self.pair.teacher

    # ------------------------------------------------------------------ called by hooks
    def update_teachers(self, iteration: int) -> float:
        return self.pair.update_teacher(iteration)

    def schedule(self, iteration: int) -> Dict[str, float]:
        period = self.pair.settings.debug_period
        self.debug_this_step = period > 0 and iteration % period == 0
        return {}

    # ------------------------------------------------------------------ training
    def training_losses(self, batched_inputs, stages: LossStages) -> None:
        source, target = batched_inputs
        batch = self.uda_batch(source, target)
        pseudo = self.pair.pseudo_targets(self.pair.teacher_outputs(batch.target_images))
        mixed = self.pair.student_losses(batch, pseudo, stages)
        get_event_storage().put_scalar("pseudo_quality", pseudo.quality)
        if self.debug_this_step and self.debug_metadata is not None:
            put_debug_panels(get_event_storage(), self.debug_metadata, self.task, source, target,
                             pseudo, mixed)
