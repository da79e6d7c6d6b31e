"""``MeanTeacherPair``: a student, its EMA teacher and DAFormer/MIC's self-training losses.

One step, in order: the teacher labels the clean target batch (``teacher_outputs``,
``pseudo_targets``); the student learns the source targets (+ thing-class ImageNet feature
distance, FD); ClassMix pastes classes of each source image onto a target image, the mix is
strongly augmented and learned with pixel weights (1 on source pixels, the pseudo-label quality
on target pixels); optionally masked image consistency (MIC). The teacher is the EMA of the
student (``update_teacher``, called by ``TeacherEMAHook`` before each step). Held by
``SelfTrainingUDA`` (the pair is the model) and by ``DUDA`` (the large pair).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Sequence

import torch
from torch import nn

from ...uda.augment import COINS, StrongAugmentation
from ...uda.ema import ema_alpha, ema_update
from ...uda.losses import feature_distance_loss
from ...uda.precision import PRECISIONS, autocast_to, float_outputs
from ...uda.masking import block_mask
from ...uda.mix import CLASS_POOLS
from ...uda.teacher import frozen_copy, teacher_mode
from ..network import SegmentationNetwork
from ..tasks import DenseTargets, MixedBatch, PseudoLabelSettings, Task, UDABatch
from .loss_stages import LossStages
from .training_passes import TrainingPasses

__all__ = ["MeanTeacherPair", "SelfTrainingSettings", "MIC_MODES",
           "check_feature_distance_reference"]

# MIC's mask modes: which images are masked ("trg": the target batch, "src": the source batch,
# neither: the first source and the first target image) and whether they are strongly
# augmented first ("aug").
MIC_MODES = ("separatetrgaug", "separatetrg", "separate", "separateaug", "separatesrc",
             "separatesrcaug")


@dataclass
class SelfTrainingSettings:
    """Every number of the self-training recipe (``MODEL.UDA.*``)."""

    ema_alpha: float = 0.999
    pseudo_labels: PseudoLabelSettings = field(default_factory=PseudoLabelSettings)
    teacher_bn: str = "batch"
    color_jitter: float = 0.2
    color_jitter_p: float = 0.8
    blur_sigma: Sequence[float] = (0.15, 1.15)
    blur_p: float = 0.5
    augmentation_coin: str = "batch"
    classmix_classes: str = "batch"
    fd_lambda: float = 0.0
    fd_classes: Sequence[int] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    fd_purity: float = 0.75
    mic_lambda: float = 0.0
    mic_mask_ratio: float = 0.7
    mic_block_size: int = 32
    mic_mode: str = "separatetrgaug"
    inference_network: str = "student"
    debug_period: int = 0
    teacher_autocast: str = ""
    fd_reference_autocast: str = ""

    @classmethod
    def from_config(cls, cfg) -> "SelfTrainingSettings":
        u = cfg.MODEL.UDA
        settings = cls(
            ema_alpha=u.EMA_ALPHA,
            pseudo_labels=PseudoLabelSettings(
                threshold=u.PSEUDO_THRESHOLD, weight_mode=u.PSEUDO_WEIGHT_MODE,
                ignore_top=u.PSEUDO_IGNORE_TOP, ignore_bottom=u.PSEUDO_IGNORE_BOTTOM),
            teacher_bn=u.TEACHER_BN, color_jitter=u.COLOR_JITTER,
            color_jitter_p=u.COLOR_JITTER_P, blur_sigma=tuple(u.BLUR_SIGMA), blur_p=u.BLUR_P,
            augmentation_coin=u.AUGMENTATION_COIN, classmix_classes=u.CLASSMIX_CLASSES,
            fd_lambda=u.FD_LAMBDA, fd_classes=tuple(u.FD_CLASSES), fd_purity=u.FD_PURITY,
            mic_lambda=u.MIC_LAMBDA, mic_mask_ratio=u.MIC_MASK_RATIO,
            mic_block_size=u.MIC_BLOCK_SIZE, mic_mode=u.MIC_MODE,
            inference_network=u.INFERENCE_NETWORK, debug_period=u.DEBUG_PERIOD,
            teacher_autocast=u.TEACHER_AUTOCAST, fd_reference_autocast=u.FD_REFERENCE_AUTOCAST)
        settings.validate()
        return settings

    def validate(self) -> None:
        choices = {"TEACHER_BN": (self.teacher_bn, ("batch", "running")),
                   "PSEUDO_WEIGHT_MODE": (self.pseudo_labels.weight_mode, ("batch", "pixel")),
                   "MIC_MODE": (self.mic_mode, MIC_MODES),
                   "AUGMENTATION_COIN": (self.augmentation_coin, COINS),
                   "CLASSMIX_CLASSES": (self.classmix_classes, CLASS_POOLS),
                   "TEACHER_AUTOCAST": (self.teacher_autocast, tuple(PRECISIONS)),
                   "FD_REFERENCE_AUTOCAST": (self.fd_reference_autocast, tuple(PRECISIONS))}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"MODEL.UDA.{key}={value!r}; use one of {list(allowed)}")


def check_feature_distance_reference(network_cfg, where: str) -> None:
    """FD compares features with an ImageNet encoder; refuse a random one unless asked for.

    ``network_cfg``: the config of the network FD regularises; ``where`` names the key that
    sets its backbone weights."""
    u = network_cfg.MODEL.UDA
    if u.FD_LAMBDA > 0 and not network_cfg.MODEL.BACKBONE.WEIGHTS and not u.FD_RANDOM_REFERENCE:
        raise ValueError(
            f"MODEL.UDA.FD_LAMBDA={u.FD_LAMBDA} pulls features towards the ImageNet encoder's, "
            f"but {where} is empty: the reference would be the random initialisation. Set "
            f"{where} to ImageNet weights converted by tools/convert_pretrained.py, or "
            f"MODEL.UDA.FD_LAMBDA 0, or MODEL.UDA.FD_RANDOM_REFERENCE True to use a random "
            f"reference on purpose.")


class MeanTeacherPair(nn.Module):
    """``student`` (trained), ``teacher`` (its EMA, never trained) and, with FD, the frozen
    ImageNet encoder ``imagenet_reference``; the strong augmentation and the settings.

    ``passes`` routes the student's training passes (through DDP with several processes);
    the pair marks the last pass of each step (see ``TrainingPasses``).
    """

    def __init__(self, student: SegmentationNetwork, *, task: Task,
                 settings: SelfTrainingSettings, pixel_statistics, passes: TrainingPasses):
        super().__init__()
        self.student = student
        self.teacher = frozen_copy(student)
        self.imagenet_reference = (frozen_copy(student.backbone) if settings.fd_lambda > 0
                                   else None)
        self.task, self.settings, self.passes = task, settings, passes
        self.augment = StrongAugmentation(
            *pixel_statistics, jitter_strength=settings.color_jitter,
            jitter_p=settings.color_jitter_p, blur_sigma=settings.blur_sigma,
            blur_p=settings.blur_p, coin=settings.augmentation_coin)

    # ------------------------------------------------------------------ teacher
    def update_teacher(self, iteration: int) -> float:
        """EMA of the student's current weights with ``α(t)``; returns ``α(t)``."""
        alpha = ema_alpha(iteration, self.settings.ema_alpha)
        ema_update(self.teacher, self.student, alpha)
        return alpha

    def teacher_outputs(self, target_images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The teacher's outputs on the clean target, at full resolution (no gradients)."""
        with teacher_mode(self.teacher, self.settings.teacher_bn), \
                autocast_to(self.settings.teacher_autocast, target_images.device):
            outputs = self.teacher(target_images)
        return self.task.full_resolution(float_outputs(outputs), target_images.shape[-2:])

    def pseudo_targets(self, teacher_outputs: Dict[str, torch.Tensor]) -> DenseTargets:
        return self.task.pseudo_targets(teacher_outputs, self.settings.pseudo_labels)

    # ------------------------------------------------------------------ student
    def student_losses(self, batch: UDABatch, pseudo: DenseTargets, stages: LossStages,
                       suffix: str = "") -> MixedBatch:
        """The student's self-training losses -- source (+ FD), mixed target, MIC -- each a
        stage of ``stages`` (``loss_src``/``loss_tgt`` get ``suffix``); returns the mixed batch
        with the student's (detached) outputs on it."""
        stages.add({k + (suffix if k in ("loss_src", "loss_tgt") else ""): v
                    for k, v in self.source_losses(batch).items()})
        mixed = self.mixed_batch(batch, pseudo)
        mic = self.settings.mic_lambda > 0
        outputs = self.passes(self.student, mixed.images, last=not mic)
        stages.add({"loss_tgt" + suffix: self.task.supervised_loss(outputs, mixed.targets)})
        mixed.student_outputs = {k: v.detach() for k, v in outputs.items()}
        if mic:
            stages.add({"loss_mic": self.masked_loss(batch, pseudo)})
        return mixed

    def frozen_student_outputs(self, batch: UDABatch, pseudo: DenseTargets) -> MixedBatch:
        """A frozen pair's mixed batch and the student's outputs on it: no gradients, no
        dropout or drop-path, BatchNorm statistics untouched (it is a fixed network now)."""
        mixed = self.mixed_batch(batch, pseudo)
        with teacher_mode(self.student, self.settings.teacher_bn):
            mixed.student_outputs = self.student(mixed.images)
        return mixed

    def source_losses(self, batch: UDABatch) -> Dict[str, torch.Tensor]:
        """The task's supervised loss on source, and FD against the ImageNet encoder."""
        outputs, features = self.passes(self.student, batch.source_images, last=False,
                                        with_features=True)
        losses = {"loss_src": self.task.supervised_loss(outputs, batch.source_targets)}
        if self.imagenet_reference is not None:
            s = self.settings
            name = list(features)[-1]
            with torch.no_grad(), autocast_to(s.fd_reference_autocast,
                                              batch.source_images.device):
                reference = self.imagenet_reference.eval()(batch.source_images)[name].float()
            losses["loss_fd"] = s.fd_lambda * feature_distance_loss(
                features[name], reference, self.task.class_map(batch.source_targets),
                s.fd_classes, self.task.num_classes, s.fd_purity, self.task.ignore_value)
        return losses

    def mixed_batch(self, batch: UDABatch, pseudo: DenseTargets) -> MixedBatch:
        """ClassMix of source onto target, strongly augmented."""
        masks = self.task.class_mix_masks(batch.source_targets, self.settings.classmix_classes)
        images, targets = self.task.mix(masks, batch.source_images, batch.target_images,
                                        batch.source_targets, pseudo)
        return MixedBatch(self.augment(images), targets, masks)

    def masked_batch(self, batch: UDABatch, pseudo: DenseTargets):
        """MIC's masked images and their targets for ``MIC_MODE`` (see ``MIC_MODES``): the
        chosen images, strongly augmented for the ``*aug`` modes, then block-masked."""
        s = self.settings
        if s.mic_mode.startswith("separatetrg"):
            images, targets = batch.target_images, pseudo
        elif s.mic_mode.startswith("separatesrc"):
            images, targets = batch.source_images, batch.source_targets
        else:  # one source and one target image (MIC asserts a batch of 2 + 2)
            images = torch.cat([batch.source_images[:1], batch.target_images[:1]])
            targets = DenseTargets.cat([batch.source_targets[:1], pseudo[:1]])
        if s.mic_mode.endswith("aug"):
            images = self.augment(images)
        return images * block_mask(images, s.mic_mask_ratio, s.mic_block_size), targets

    def masked_loss(self, batch: UDABatch, pseudo: DenseTargets) -> torch.Tensor:
        images, targets = self.masked_batch(batch, pseudo)
        outputs = self.passes(self.student, images, last=True)
        return self.settings.mic_lambda * self.task.supervised_loss(outputs, targets)
