"""``SelfTrainingUDA``: one student and its EMA teacher, trained the DAFormer/MIC way.

Per iteration t (the trainer's, so ``--resume`` is exact): EMA update of the teacher; the
student learns the source labels; the teacher labels the clean target batch; ClassMix pastes
half of each source image's classes onto a target image; the strongly augmented mix is
learned with pixel weights (1 on source pixels, the pseudo-label quality on target pixels);
optionally thing-class ImageNet feature distance (FD) and masked image consistency (MIC).
Pieces come from ``duda_d2.uda``; this module only composes them.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

from ...uda.augment import COINS, StrongAugmentation
from ...uda.ema import ema_alpha, ema_update
from ...uda.losses import feature_distance_loss, upsample_logits, weighted_cross_entropy
from ...uda.masking import block_mask
from ...uda.mix import CLASS_POOLS, class_mix_masks, mix
from ...uda.pseudo_label import PseudoLabels, pseudo_labels
from ..network import SegmentationNetwork
from .loss_stages import Backward, LossStages
from .segmentor import UDASegmentor, batch_images, batch_targets

__all__ = ["SelfTrainingUDA", "SelfTrainingSettings", "MixedTarget", "frozen_copy",
           "teacher_mode", "check_feature_distance_reference", "MIC_MODES"]

# MIC's mask modes: which images are masked ("trg": the target batch, "src": the source batch,
# neither: the first source and the first target image) and whether they are strongly
# augmented first ("aug").
MIC_MODES = ("separatetrgaug", "separatetrg", "separate", "separateaug", "separatesrc",
             "separatesrcaug")


@dataclass
class SelfTrainingSettings:
    """Every number of the self-training recipe (``MODEL.UDA.*``)."""

    ema_alpha: float = 0.999
    pseudo_threshold: float = 0.968
    pseudo_weight_mode: str = "batch"
    ignore_top: int = 0
    ignore_bottom: int = 0
    teacher_bn: str = "batch"
    color_jitter: float = 0.2
    color_jitter_p: float = 0.8
    blur_sigma: Sequence[float] = (0.15, 1.15)
    blur_p: float = 0.5
    fd_lambda: float = 0.0
    fd_classes: Sequence[int] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    fd_purity: float = 0.75
    mic_lambda: float = 0.0
    mic_mask_ratio: float = 0.7
    mic_block_size: int = 32
    mic_mode: str = "separatetrgaug"
    augmentation_coin: str = "batch"
    classmix_classes: str = "batch"
    inference_network: str = "student"
    debug_period: int = 0

    @classmethod
    def from_config(cls, cfg) -> "SelfTrainingSettings":
        u = cfg.MODEL.UDA
        settings = cls(
            ema_alpha=u.EMA_ALPHA, pseudo_threshold=u.PSEUDO_THRESHOLD,
            pseudo_weight_mode=u.PSEUDO_WEIGHT_MODE, ignore_top=u.PSEUDO_IGNORE_TOP,
            ignore_bottom=u.PSEUDO_IGNORE_BOTTOM, teacher_bn=u.TEACHER_BN,
            color_jitter=u.COLOR_JITTER, color_jitter_p=u.COLOR_JITTER_P,
            blur_sigma=tuple(u.BLUR_SIGMA), blur_p=u.BLUR_P, fd_lambda=u.FD_LAMBDA,
            fd_classes=tuple(u.FD_CLASSES), fd_purity=u.FD_PURITY, mic_lambda=u.MIC_LAMBDA,
            mic_mask_ratio=u.MIC_MASK_RATIO, mic_block_size=u.MIC_BLOCK_SIZE,
            mic_mode=u.MIC_MODE, augmentation_coin=u.AUGMENTATION_COIN,
            classmix_classes=u.CLASSMIX_CLASSES, inference_network=u.INFERENCE_NETWORK,
            debug_period=u.DEBUG_PERIOD)
        settings.validate()
        return settings

    def validate(self) -> None:
        choices = {"TEACHER_BN": (self.teacher_bn, ("batch", "running")),
                   "PSEUDO_WEIGHT_MODE": (self.pseudo_weight_mode, ("batch", "pixel")),
                   "MIC_MODE": (self.mic_mode, MIC_MODES),
                   "AUGMENTATION_COIN": (self.augmentation_coin, COINS),
                   "CLASSMIX_CLASSES": (self.classmix_classes, CLASS_POOLS)}
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


@dataclass
class MixedTarget:
    """A strongly augmented ClassMix batch, its labels and weights, and a student's logits."""

    images: torch.Tensor
    labels: torch.Tensor
    weight: torch.Tensor
    masks: torch.Tensor
    logits: Optional[torch.Tensor] = None


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy that never receives gradients (teachers, the ImageNet feature reference)."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


@contextlib.contextmanager
def teacher_mode(network: nn.Module, bn: str = "batch"):
    """Evaluation mode (no dropout, no drop-path) for a no-grad teacher pass; with
    ``bn="batch"`` its BatchNorm layers normalise with the batch's statistics without
    touching their running averages. The previous modes are restored afterwards."""
    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    batch_norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in batch_norms]
    counts = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
              for m in batch_norms]
    if bn == "batch":
        for m in batch_norms:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        # inference_mode, not no_grad: no autograd bookkeeping at all (no version counters).
        # Its outputs may be read by losses but never saved for backward, which teacher
        # signals never are (they are targets).
        with torch.inference_mode():
            yield network
    finally:
        for m, momentum, count in zip(batch_norms, momenta, counts):
            m.momentum = momentum
            if count is not None:  # a training-mode BatchNorm counts batches even at momentum 0
                m.num_batches_tracked.copy_(count)
        for m, training in modes:
            m.training = training


@META_ARCH_REGISTRY.register()
class SelfTrainingUDA(UDASegmentor):
    """Student + EMA teacher (+ optional frozen ImageNet backbone for FD).

    Training input: ``(source_batch, target_batch)`` from ``build_uda_train_loader``. The
    teacher is a frozen copy (``requires_grad=False``: DDP neither buckets nor reduces it) held
    in the module so checkpoints carry it.
    """

    uses_target_data = True

    @configurable
    def __init__(self, *, network: SegmentationNetwork, settings: SelfTrainingSettings, **kwargs):
        super().__init__(network=network, **kwargs)
        self.init_self_training(network, settings)

    def init_self_training(self, student: SegmentationNetwork,
                           settings: SelfTrainingSettings) -> None:
        """The EMA teacher (and FD reference) of ``student``, and the strong augmentation."""
        self.settings = settings
        self.teacher = frozen_copy(student)
        self.imnet_backbone = frozen_copy(student.backbone) if settings.fd_lambda > 0 else None
        self.augment = StrongAugmentation(
            *self.pixel_statistics, jitter_strength=settings.color_jitter,
            jitter_p=settings.color_jitter_p, blur_sigma=settings.blur_sigma,
            blur_p=settings.blur_p, coin=settings.augmentation_coin)
        self.debug_visuals: Dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg) -> dict:
        args = super().from_config(cfg)
        args["settings"] = SelfTrainingSettings.from_config(cfg)
        check_feature_distance_reference(*cls.feature_distance_network_config(cfg))
        return args

    @classmethod
    def feature_distance_network_config(cls, cfg):
        """(config of the network FD regularises, the key of its backbone weights)."""
        return cfg, "MODEL.BACKBONE.WEIGHTS"

    # ------------------------------------------------------------------ inference
    def inference_network(self) -> nn.Module:
        choice = self.settings.inference_network
        if choice not in ("student", "teacher"):
            raise ValueError(f"MODEL.UDA.INFERENCE_NETWORK={choice!r}; use 'student' or 'teacher'")
        return self.network if choice == "student" else self.teacher

    def forward(self, batched_inputs, backward: Optional[Backward] = None):
        """Training input ``(source, target)``: the loss dict, already back-propagated stage
        by stage when ``backward`` is given (see ``LossStages``)."""
        if not self.training:
            images = batch_images(batched_inputs, "image", self.pixel_mean, self.pixel_std,
                                  self.network.size_divisibility)
            return self.predict(batched_inputs, images, self.inference_network())
        source, target = batched_inputs
        stages = LossStages(backward)
        self.training_losses(source, target, get_event_storage().iter, stages)
        return stages.losses

    # ------------------------------------------------------------------ training
    def prepare_batches(self, source: List[dict], target: List[dict]):
        """Normalised, padded source/target images and padded source labels."""
        div = self.network.size_divisibility
        xs = batch_images(source, "image", self.pixel_mean, self.pixel_std, div)
        xt = batch_images(target, "image", self.pixel_mean, self.pixel_std, div)
        return xs.tensor, batch_targets(source, xs, self.ignore_value), xt.tensor

    def update_teacher(self, student: nn.Module, iteration: int) -> float:
        alpha = ema_alpha(iteration, self.settings.ema_alpha)
        ema_update(self.teacher, student, alpha)
        return alpha

    def teacher_pseudo_labels(self, target_images: torch.Tensor) -> Tuple[torch.Tensor, PseudoLabels]:
        """Teacher logits on the clean target (full resolution) and their pseudo-labels."""
        s = self.settings
        with teacher_mode(self.teacher, s.teacher_bn):
            logits = upsample_logits(self.teacher(target_images), target_images.shape[-2:])
        return logits, pseudo_labels(logits, s.pseudo_threshold, s.pseudo_weight_mode,
                                     s.ignore_top, s.ignore_bottom)

    def source_losses(self, network: SegmentationNetwork, xs: torch.Tensor, ys: torch.Tensor,
                      imnet_backbone: Optional[nn.Module]) -> Dict[str, torch.Tensor]:
        """Cross-entropy on source labels, and FD against the frozen ImageNet backbone."""
        logits, features = self.passes(network, xs, last=False, with_features=True)
        losses = {"loss_src": weighted_cross_entropy(logits, ys, ignore_index=self.ignore_value)}
        if imnet_backbone is not None:
            name = list(features)[-1]
            with torch.no_grad():
                reference = imnet_backbone.eval()(xs)[name]
            losses["loss_fd"] = self.settings.fd_lambda * feature_distance_loss(
                features[name], reference, ys, self.settings.fd_classes, self.num_classes,
                self.settings.fd_purity, self.ignore_value)
        return losses

    def mixed_batch(self, xs, ys, xt, pl: PseudoLabels) -> "MixedTarget":
        """ClassMix of source onto target, strongly augmented."""
        masks = class_mix_masks(ys, self.ignore_value, pool=self.settings.classmix_classes)
        mixed = mix(masks, xs, xt, ys, pl.labels, pl.weight)
        return MixedTarget(self.augment(mixed.images), mixed.labels, mixed.weight, masks)

    def masked_batch(self, xs, ys, xt, pl: PseudoLabels):
        """MIC's masked images, labels and pixel weights for ``MIC_MODE`` (see ``MIC_MODES``):
        the chosen images, strongly augmented for the ``*aug`` modes, then block-masked."""
        s = self.settings
        if s.mic_mode.startswith("separatetrg"):
            images, labels, weight = xt, pl.labels, pl.weight
        elif s.mic_mode.startswith("separatesrc"):
            images, labels, weight = xs, ys, torch.ones_like(ys, dtype=pl.weight.dtype)
        else:  # one source and one target image (MIC asserts a batch of 2 + 2)
            images = torch.cat([xs[:1], xt[:1]])
            labels = torch.cat([ys[:1], pl.labels[:1]])
            weight = torch.cat([torch.ones_like(pl.weight[:1]), pl.weight[:1]])
        if s.mic_mode.endswith("aug"):
            images = self.augment(images)
        return images * block_mask(images, s.mic_mask_ratio, s.mic_block_size), labels, weight

    def masked_target_loss(self, network: nn.Module, xs, ys, xt,
                           pl: PseudoLabels) -> torch.Tensor:
        images, labels, weight = self.masked_batch(xs, ys, xt, pl)
        logits = self.passes(network, images, last=True)
        return self.settings.mic_lambda * weighted_cross_entropy(logits, labels, weight,
                                                                 self.ignore_value)

    def student_losses(self, student: SegmentationNetwork, xs, ys, xt, pl: PseudoLabels,
                       stages: LossStages, suffix: str = "") -> "MixedTarget":
        """The self-training losses of ``student`` -- source CE (+ FD), mixed-target CE, MIC --
        each a stage of ``stages`` (CE names get ``suffix``); returns the mixed batch with
        the student's (detached) logits on it."""
        names = {"loss_src": "loss_src" + suffix, "loss_tgt": "loss_tgt" + suffix}
        source = self.source_losses(student, xs, ys, self.imnet_backbone)
        stages.add({names.get(k, k): v for k, v in source.items()})
        mixed = self.mixed_batch(xs, ys, xt, pl)
        mic = self.settings.mic_lambda > 0
        logits = self.passes(student, mixed.images, last=not mic)
        stages.add({names["loss_tgt"]: weighted_cross_entropy(logits, mixed.labels, mixed.weight,
                                                              self.ignore_value)})
        mixed.logits = logits.detach()
        if mic:
            stages.add({"loss_mic": self.masked_target_loss(student, xs, ys, xt, pl)})
        return mixed

    def training_losses(self, source: List[dict], target: List[dict], iteration: int,
                        stages: LossStages) -> None:
        """One iteration's losses, added to ``stages``."""
        alpha = self.update_teacher(self.network, iteration)
        xs, ys, xt = self.prepare_batches(source, target)
        _, pl = self.teacher_pseudo_labels(xt)
        mixed = self.student_losses(self.network, xs, ys, xt, pl, stages)
        get_event_storage().put_scalars(pseudo_quality=pl.quality, ema_alpha=alpha)
        self.keep_debug_visuals(iteration, source, target, pl, mixed)

    def keep_debug_visuals(self, iteration: int, source, target, pl: PseudoLabels,
                           mixed: "MixedTarget") -> None:
        """Keep the first pair's panels (for ``DebugPanelHook``) every ``debug_period`` iters."""
        period = self.settings.debug_period
        if period <= 0 or iteration % period:
            return
        self.debug_visuals = {
            "source": source[0]["image"], "target": target[0]["image"],
            "source_label": source[0]["sem_seg"], "pseudo_label": pl.labels[0].cpu(),
            "mix_mask": mixed.masks[0, 0].cpu(),
            "mix_prediction": mixed.logits[0].argmax(0).cpu(),
        }
