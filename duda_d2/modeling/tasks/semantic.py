"""``SemanticTask``: everything that makes the UDA algorithm *semantic* segmentation.

The meta-architectures (plain, self-training, DUDA), the trainer and ``LossStages`` never name
a task's outputs; they ask the task. A network returns a dict of named maps -- here one,
``"sem_seg"`` logits (N, C, h, w) -- and the task says what the targets are (label maps from
the dataset's ``sem_seg``), the supervised loss (pixel-weighted cross-entropy), pseudo-targets
from a teacher (argmax with DAFormer's quality weight), how ClassMix chooses and mixes targets,
the distillation loss (pixel-weighted KL), the class map used by the inconsistency weights and
by feature distance, and the post-processing for Detectron2's evaluator. A second task (e.g.
bottom-up panoptic: semantic logits + instance centres + offsets) implements the same methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ...uda.distill import label_weights, weighted_kd
from ...uda.losses import upsample_logits, weighted_cross_entropy
from ...uda.mix import class_mix_masks, mix_images, mix_maps
from ...uda.pseudo_label import ensemble_logits, pseudo_labels
from .batches import DenseTargets

__all__ = ["SemanticTask", "PseudoLabelSettings", "Outputs"]

Outputs = Dict[str, torch.Tensor]
SEM_SEG = "sem_seg"


@dataclass
class PseudoLabelSettings:
    """How a teacher's outputs become pseudo-targets (``MODEL.UDA.PSEUDO_*``)."""

    threshold: float = 0.968
    weight_mode: str = "batch"
    ignore_top: int = 0
    ignore_bottom: int = 0


class SemanticTask:
    """Semantic segmentation: ``num_classes`` classes, ``ignore_value`` for unlabelled pixels."""

    # The loss name of plain supervised training (Detectron2's SemanticSegmentor's).
    supervised_loss_name = "loss_sem_seg"

    def __init__(self, *, num_classes: int, ignore_value: int = 255):
        self.num_classes = num_classes
        self.ignore_value = ignore_value

    # ------------------------------------------------------------------ targets
    def source_targets(self, batched_inputs: List[dict], images: ImageList) -> DenseTargets:
        """The inputs' ``sem_seg`` label maps, padded with ``ignore_value`` to the image batch."""
        labels = [x[SEM_SEG].to(images.tensor.device) for x in batched_inputs]
        out = labels[0].new_full((len(labels), *images.tensor.shape[-2:]), self.ignore_value)
        for i, label in enumerate(labels):
            out[i, : label.shape[0], : label.shape[1]] = label
        return DenseTargets({SEM_SEG: out})

    def input_class_map(self, batched_input: dict) -> torch.Tensor:
        """(H, W) classes of one dataset input (for pictures)."""
        return batched_input[SEM_SEG]

    def class_map(self, targets: DenseTargets) -> torch.Tensor:
        """(N, H, W) class of every pixel (``ignore_value`` where unlabelled)."""
        return targets.maps[SEM_SEG]

    def predicted_classes(self, outputs: Outputs, size) -> torch.Tensor:
        """(N, H, W) argmax class of ``outputs`` at ``size``."""
        logits = outputs[SEM_SEG].detach()
        return nn.functional.interpolate(logits, size=tuple(size), mode="bilinear",
                                         align_corners=False).argmax(1)

    def class_pixel_weights(self, class_weights: torch.Tensor,
                            targets: DenseTargets) -> torch.Tensor:
        """``c[y]`` per pixel (1 on unlabelled pixels)."""
        return label_weights(class_weights, self.class_map(targets), self.ignore_value)

    # ------------------------------------------------------------------ losses
    def supervised_loss(self, outputs: Outputs, targets: DenseTargets,
                        class_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Cross-entropy, pixel-weighted by ``targets.weight`` (times per-pixel class weights
        ``class_weight``, e.g. the inconsistency weights), mean over all pixels."""
        weight = targets.weight
        if class_weight is not None:
            weight = class_weight if weight is None else weight * class_weight
        return weighted_cross_entropy(outputs[SEM_SEG], targets.maps[SEM_SEG], weight,
                                      self.ignore_value)

    def distillation_loss(self, teacher: Outputs, student: Outputs, targets: DenseTargets,
                          pixel_weight: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``mean(pixel_weight · τ² KL(softmax(z_T/τ) ‖ softmax(z_S/τ)))``; ``targets`` -- the
        (pseudo-)labels of the distilled images -- are not needed by this task."""
        return weighted_kd(teacher[SEM_SEG], student[SEM_SEG], pixel_weight, temperature)

    @staticmethod
    def zero_loss(outputs: Outputs) -> torch.Tensor:
        """0 with a graph through ``outputs`` (a loss whose terms may all be off)."""
        return outputs[SEM_SEG].sum() * 0.0

    # ------------------------------------------------------------------ teachers
    def full_resolution(self, outputs: Outputs, size) -> Outputs:
        return {SEM_SEG: upsample_logits(outputs[SEM_SEG], size)}

    def pseudo_targets(self, teacher: Outputs, settings: PseudoLabelSettings) -> DenseTargets:
        """Argmax labels with DAFormer's confidence-based quality weight."""
        pl = pseudo_labels(teacher[SEM_SEG], settings.threshold, settings.weight_mode,
                           settings.ignore_top, settings.ignore_bottom)
        return DenseTargets({SEM_SEG: pl.labels}, pl.weight, pl.quality)

    def ensemble(self, teachers: Sequence[Outputs], weights: Sequence[float]) -> Outputs:
        """The teachers' weighted mean probability (as log-probabilities)."""
        return {SEM_SEG: ensemble_logits([t[SEM_SEG] for t in teachers], weights)}

    # ------------------------------------------------------------------ ClassMix
    def class_mix_masks(self, source: DenseTargets, pool: str = "batch") -> torch.Tensor:
        return class_mix_masks(source.maps[SEM_SEG], self.ignore_value, pool=pool)

    def mix(self, masks: torch.Tensor, source_images: torch.Tensor, target_images: torch.Tensor,
            source: DenseTargets, pseudo: DenseTargets) -> Tuple[torch.Tensor, DenseTargets]:
        """``x = M x_s + (1-M) x_t``, ``y = M y_s + (1-M) ŷ``, ``w = M + (1-M) q``."""
        images = mix_images(masks, source_images, target_images)
        labels = mix_maps(masks, source.maps[SEM_SEG], pseudo.maps[SEM_SEG])
        weight = mix_maps(masks, torch.ones_like(pseudo.weight), pseudo.weight)
        return images, DenseTargets({SEM_SEG: labels}, weight)

    # ------------------------------------------------------------------ inference
    def postprocess(self, outputs: Outputs, image_size, height: int, width: int) -> Outputs:
        """One image's outputs at its original size, for Detectron2's evaluator."""
        return {SEM_SEG: sem_seg_postprocess(outputs[SEM_SEG], image_size, height, width)}

