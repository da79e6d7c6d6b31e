"""``PanopticTask``: bottom-up panoptic segmentation (Panoptic-DeepLab) behind the task seam.

A panoptic network returns three stride-4 maps: semantic logits ``sem_seg`` (N, C, h, w), an
instance-centre heat-map ``center`` (N, 1, h, w) and centre offsets ``offset`` (N, 2, h, w),
(dy, dx) in input-image pixels. Targets come from panoptic label maps (``pan_seg`` of a mapped
input; encoding in ``duda_d2/uda/panoptic.py``) through Panoptic-DeepLab's own target generator
(Detectron2's ``projects/panoptic_deeplab``), at the label resolution.

The UDA pieces, as ``docs/duda_method.md`` ("Panoptic extension") specifies:

- **pseudo-targets** (``pseudo_targets``): the teacher's semantic pseudo-label ``ŷ`` with
  DAFormer's quality weight (exactly as ``SemanticTask``), and the teacher's *post-processed*
  instances -- centres found by Panoptic-DeepLab's ``find_instance_center`` (scores below
  ``PSEUDO_CENTER_THRESHOLD`` dropped) and pixels grouped by its ``group_pixels`` -- written
  as a panoptic label map. We chose a label map (rather than the teacher's raw centre/offset
  maps as hard targets) so that ClassMix mixes *label maps* and one target generator makes the
  centres and offsets of the mixed image: a target instance cut by pasted source pixels gets
  the centre of what is left of it, and pasted source instances keep their own centres. Thing
  pixels with no surviving centre keep their class but get no centre/offset target (crowd).
- **ClassMix** (``mix``): the semantic task's class masks; ids of pasted instances made unique.
  The pixel weight ``M + (1 - M) q`` scales the semantic, centre and offset losses alike.
- **losses**: ``CE(z) + λ_c MSE(h) + λ_o L1(o)``; the cross-entropy is the semantic task's
  (DAFormer's plain, pixel-weighted CE, times Panoptic-DeepLab's small-instance weights), not
  Panoptic-DeepLab's top-k hard-pixel mining, so both tasks train the semantic branch alike.
- **distillation** (``distillation_loss``) on the raw maps as soft targets: the semantic KL
  (weighted by the inconsistency weights) ``+ λ_c mean((h_S - h_T)²) + λ_o L1(o_S, o_T)`` on
  the thing pixels of the (pseudo-)labels.
- **inference** (``postprocess``): ``get_panoptic_segmentation`` at each image's original
  size; the stuff-area threshold is scaled with the image area.

Deliberate differences from Detectron2's Panoptic-DeepLab: crowd segments place no centre
peak (see ``targets_from_panoptic``); offsets are rescaled when a prediction is resized to the
original image. Known costs: targets are generated on the CPU inside the step (source, pseudo,
mix: three generator calls per step, a device-to-host copy each), because the mixed label maps
exist only there; the centre/offset losses divide by each process's own count of pixels with a
target, as Panoptic-DeepLab does, so with several processes they are the mean of per-process
means rather than the one-process value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ...uda.losses import upsample_logits
from ...uda.panoptic import (center_distillation, center_loss, mix_panoptic_maps,
                             offset_distillation, offset_loss, panoptic_ids, segments_of,
                             thing_mask)
from .batches import DenseTargets
from .semantic import SEM_SEG, Outputs, PseudoLabelSettings, SemanticTask

__all__ = ["PanopticSettings", "PanopticTask", "PAN_SEG", "resize_offsets",
           "panoptic_metadata_ids"]

PAN_SEG, CENTER, OFFSET = "pan_seg", "center", "offset"
# Target maps besides the semantic labels (DenseTargets.maps keys).
CENTER_WEIGHT, OFFSET_WEIGHT, SEMANTIC_WEIGHT = "center_weight", "offset_weight", "semantic_weight"


def _panoptic_deeplab():
    """Detectron2's Panoptic-DeepLab project (imported on use: it needs ``panopticapi``)."""
    from detectron2.projects.panoptic_deeplab import post_processing, target_generator
    return post_processing, target_generator


@dataclass
class PanopticSettings:
    """Every number of the panoptic task (``INPUT.*`` targets, ``MODEL.INS_EMBED_HEAD`` loss
    weights, ``MODEL.PANOPTIC_DEEPLAB`` post-processing); ``thing_ids``/``label_divisor``
    come from the training data set's metadata."""

    thing_ids: Sequence[int]
    label_divisor: int = 1000
    sigma: float = 8.0
    ignore_stuff_in_offset: bool = True
    small_instance_area: int = 4096
    small_instance_weight: float = 3.0
    ignore_crowd_in_semantic: bool = False
    center_loss_weight: float = 200.0
    offset_loss_weight: float = 0.01
    center_threshold: float = 0.1
    nms_kernel: int = 7
    top_k: int = 200
    stuff_area: float = 2048.0
    stuff_area_reference: Sequence[int] = (1024, 2048)
    pseudo_center_threshold: float = 0.3

    @classmethod
    def from_config(cls, cfg, *, thing_ids: Sequence[int], label_divisor: int
                    ) -> "PanopticSettings":
        head, post = cfg.MODEL.INS_EMBED_HEAD, cfg.MODEL.PANOPTIC_DEEPLAB
        return cls(thing_ids=tuple(thing_ids), label_divisor=label_divisor,
                   sigma=cfg.INPUT.GAUSSIAN_SIGMA,
                   ignore_stuff_in_offset=cfg.INPUT.IGNORE_STUFF_IN_OFFSET,
                   small_instance_area=cfg.INPUT.SMALL_INSTANCE_AREA,
                   small_instance_weight=cfg.INPUT.SMALL_INSTANCE_WEIGHT,
                   ignore_crowd_in_semantic=cfg.INPUT.IGNORE_CROWD_IN_SEMANTIC,
                   center_loss_weight=head.CENTER_LOSS_WEIGHT,
                   offset_loss_weight=head.OFFSET_LOSS_WEIGHT,
                   center_threshold=post.CENTER_THRESHOLD, nms_kernel=post.NMS_KERNEL,
                   top_k=post.TOP_K_INSTANCE, stuff_area=post.STUFF_AREA,
                   stuff_area_reference=tuple(post.STUFF_AREA_REFERENCE_SIZE),
                   pseudo_center_threshold=post.PSEUDO_CENTER_THRESHOLD)

    def __post_init__(self) -> None:
        """Settings Detectron2's generator and post-processing would take silently wrong (or
        fail on only at the first evaluation)."""
        problems = []
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            problems.append(f"MODEL.PANOPTIC_DEEPLAB.NMS_KERNEL={self.nms_kernel} must be an odd "
                            f"positive integer (a centred max-pooling window)")
        if self.sigma <= 0 or int(self.sigma) != self.sigma:
            problems.append(f"INPUT.GAUSSIAN_SIGMA={self.sigma} must be a positive integer "
                            f"(Panoptic-DeepLab's Gaussian is centred only for integer sigma)")
        if self.small_instance_weight < 0 or int(self.small_instance_weight) != \
                self.small_instance_weight:
            problems.append(f"INPUT.SMALL_INSTANCE_WEIGHT={self.small_instance_weight} must be a "
                            f"non-negative integer (the target generator stores it as uint8)")
        if len(tuple(self.stuff_area_reference)) != 2:
            problems.append(f"MODEL.PANOPTIC_DEEPLAB.STUFF_AREA_REFERENCE_SIZE="
                            f"{tuple(self.stuff_area_reference)} must be (height, width)")
        if problems:
            raise ValueError("; ".join(problems))

    def stuff_area_at(self, height: int, width: int) -> int:
        """The stuff-area threshold scaled to an image of (height, width)."""
        ref_h, ref_w = self.stuff_area_reference
        return int(round(self.stuff_area * height * width / (ref_h * ref_w)))


class PanopticTask:
    """Semantic logits + instance centres + offsets; the semantic branch is a ``SemanticTask``
    (held, not inherited), whose class maps, ClassMix masks and inconsistency weights apply
    unchanged."""

    supervised_loss_name = "loss_panoptic"

    def __init__(self, *, num_classes: int, ignore_value: int = 255,
                 settings: PanopticSettings):
        if not 0 <= ignore_value <= 255:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore_value}: the panoptic target "
                             f"generator stores classes as uint8, use a value in 0..255")
        self.semantic = SemanticTask(num_classes=num_classes, ignore_value=ignore_value)
        self.num_classes, self.ignore_value = num_classes, ignore_value
        self.settings = settings
        _, target_generator = _panoptic_deeplab()
        self.target_generator = target_generator.PanopticDeepLabTargetGenerator(
            ignore_label=ignore_value, thing_ids=list(settings.thing_ids), sigma=settings.sigma,
            ignore_stuff_in_offset=settings.ignore_stuff_in_offset,
            small_instance_area=settings.small_instance_area,
            small_instance_weight=settings.small_instance_weight,
            ignore_crowd_in_semantic=settings.ignore_crowd_in_semantic)

    # ------------------------------------------------------------------ targets
    def targets_from_panoptic(self, panoptic: torch.Tensor, weight=None) -> DenseTargets:
        """Panoptic-DeepLab's targets (semantic labels and weights, centre heat-map, offsets
        and their masks) of (N, H, W) label maps, made by its own target generator from the
        non-crowd segments; crowd pixels keep their class and get no centre or offset target
        (and, unlike Detectron2's generator, place no centre peak at their centre of mass)."""
        s = self.settings
        parts = {SEM_SEG: [], CENTER: [], CENTER_WEIGHT: [], OFFSET: [], OFFSET_WEIGHT: [],
                 SEMANTIC_WEIGHT: []}
        for label_map in panoptic.cpu():
            # Crowd segments are left out: Detectron2's generator would draw a Gaussian at a
            # crowd region's centre of mass (masked only on the region itself), a false centre
            # on whatever lies there -- and every dropped pseudo instance is crowd.
            segments = [g for g in segments_of(label_map, s.thing_ids, s.label_divisor,
                                               self.ignore_value) if not g["iscrowd"]]
            t = self.target_generator(label_map.numpy(), segments)
            parts[SEM_SEG].append(t["sem_seg"])
            parts[CENTER].append(t["center"])
            parts[CENTER_WEIGHT].append(t["center_weights"][0])
            parts[OFFSET].append(t["offset"])
            parts[OFFSET_WEIGHT].append(t["offset_weights"][0])
            parts[SEMANTIC_WEIGHT].append(t["sem_seg_weights"])
        maps = {k: torch.stack(v).to(panoptic.device) for k, v in parts.items()}
        if not s.ignore_crowd_in_semantic:  # crowd pixels keep their class (weight 1)
            classes, instances = panoptic // s.label_divisor, panoptic % s.label_divisor
            crowd = thing_mask(classes, s.thing_ids) & (instances == 0)
            maps[SEM_SEG] = torch.where(crowd, classes, maps[SEM_SEG])
        maps[PAN_SEG] = panoptic
        return DenseTargets(maps, weight)

    def source_targets(self, batched_inputs: List[dict], images: ImageList) -> DenseTargets:
        """The inputs' ``pan_seg`` label maps, padded as unlabelled, and their targets."""
        if any(PAN_SEG not in x for x in batched_inputs):
            raise ValueError("MODEL.TASK 'panoptic' needs panoptic training data (inputs with "
                             "'pan_seg'): use a *_panoptic data set (e.g. "
                             "synthetic_uda_source_train_panoptic, cityscapes_fine_panoptic_train)")
        device = images.tensor.device
        maps = [x[PAN_SEG].to(device) for x in batched_inputs]
        out = maps[0].new_full((len(maps), *images.tensor.shape[-2:]),
                               self.ignore_value * self.settings.label_divisor)
        for i, m in enumerate(maps):
            out[i, : m.shape[0], : m.shape[1]] = m
        return self.targets_from_panoptic(out)

    def input_class_map(self, batched_input: dict) -> torch.Tensor:
        return self.semantic.input_class_map(batched_input)

    def class_map(self, targets: DenseTargets) -> torch.Tensor:
        return self.semantic.class_map(targets)

    def predicted_classes(self, outputs: Outputs, size) -> torch.Tensor:
        return self.semantic.predicted_classes(outputs, size)

    def class_pixel_weights(self, class_weights: torch.Tensor,
                            targets: DenseTargets) -> torch.Tensor:
        return self.semantic.class_pixel_weights(class_weights, targets)

    def things(self, targets: DenseTargets) -> torch.Tensor:
        """(N, H, W) thing pixels of the (pseudo-)labels."""
        return thing_mask(self.class_map(targets), self.settings.thing_ids)

    # ------------------------------------------------------------------ losses
    def supervised_loss(self, outputs: Outputs, targets: DenseTargets,
                        class_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``CE_{w·c}(z) + λ_c MSE_w(h) + λ_o L1_w(o)``, ``w`` the targets' pixel weight and
        ``c`` per-pixel class weights (the inconsistency weights), which act on the semantic
        term only."""
        s, maps, w = self.settings, targets.maps, targets.weight
        semantic_weight = maps[SEMANTIC_WEIGHT] if w is None else maps[SEMANTIC_WEIGHT] * w
        if class_weight is not None:
            semantic_weight = semantic_weight * class_weight
        ce = self.semantic.supervised_loss(outputs, targets.with_weight(semantic_weight))
        centre = center_loss(outputs[CENTER], maps[CENTER], maps[CENTER_WEIGHT], w)
        offsets = offset_loss(outputs[OFFSET], maps[OFFSET], maps[OFFSET_WEIGHT], w)
        return ce + s.center_loss_weight * centre + s.offset_loss_weight * offsets

    def distillation_loss(self, teacher: Outputs, student: Outputs, targets: DenseTargets,
                          pixel_weight: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Semantic KL (pixel-weighted) ``+ λ_c mean((h_S - h_T)²) + λ_o L1(o_S, o_T)`` on the
        thing pixels of ``targets``; the teacher's maps are soft targets (no gradient)."""
        s = self.settings
        kl = self.semantic.distillation_loss(teacher, student, targets, pixel_weight,
                                             temperature)
        size = pixel_weight.shape[-2:]
        centre = center_distillation(teacher[CENTER], student[CENTER], size)
        offsets = offset_distillation(teacher[OFFSET], student[OFFSET], self.things(targets))
        return kl + s.center_loss_weight * centre + s.offset_loss_weight * offsets

    def zero_loss(self, outputs: Outputs) -> torch.Tensor:
        return sum(v.sum() for v in outputs.values()) * 0.0

    # ------------------------------------------------------------------ teachers
    def full_resolution(self, outputs: Outputs, size) -> Outputs:
        """Every map resized (offsets are in image pixels already)."""
        return {k: upsample_logits(v, size) for k, v in outputs.items()}

    def teacher_instances(self, classes: torch.Tensor, outputs: Outputs) -> torch.Tensor:
        """(N, H, W) instance numbers of the teacher's thing pixels (0 = none): Panoptic-
        DeepLab's centre finding (scores below ``pseudo_center_threshold`` dropped) and pixel
        grouping on the full-resolution maps, ``classes`` being the pseudo-labels."""
        s = self.settings
        post_processing, _ = _panoptic_deeplab()
        instances = torch.zeros_like(classes)
        for i in range(classes.shape[0]):
            centres = post_processing.find_instance_center(
                outputs[CENTER][i].detach().float().clone(), threshold=s.pseudo_center_threshold,
                nms_kernel=s.nms_kernel, top_k=min(s.top_k, classes[i].numel()))
            if len(centres):
                grouped = post_processing.group_pixels(
                    centres, outputs[OFFSET][i].detach().float())[0]
                # Grouping is class-agnostic (every pixel joins its nearest centre): a segment
                # keeps its instance only if its centre lies on its own class, so pixels of
                # another class drawn to a kept centre do not revive a dropped instance.
                centre_class = classes[i][centres[:, 0], centres[:, 1]]
                own = centre_class[grouped - 1] == classes[i]
                instances[i] = torch.where(own, grouped, 0)
        return instances

    def pseudo_targets(self, teacher: Outputs, settings: PseudoLabelSettings) -> DenseTargets:
        """Semantic pseudo-labels with the quality weight, the teacher's instances as a label
        map, and the targets the generator makes from it."""
        semantic = self.semantic.pseudo_targets(teacher, settings)
        classes = self.class_map(semantic)
        panoptic = panoptic_ids(classes, self.teacher_instances(classes, teacher),
                                self.settings.thing_ids, self.settings.label_divisor)
        targets = self.targets_from_panoptic(panoptic, semantic.weight)
        targets.quality = semantic.quality
        return targets

    def ensemble(self, teachers: Sequence[Outputs], weights: Sequence[float]) -> Outputs:
        """Semantic: the weighted mean probability; centres and offsets: the weighted mean."""
        size = teachers[0][CENTER].shape[-2:]
        merged = self.semantic.ensemble(teachers, weights)
        total = sum(weights)
        for key in (CENTER, OFFSET):
            merged[key] = sum(w * upsample_logits(t[key].detach().float(), size)
                              for t, w in zip(teachers, weights)) / total
        return merged

    # ------------------------------------------------------------------ ClassMix
    def class_mix_masks(self, source: DenseTargets, pool: str = "batch") -> torch.Tensor:
        return self.semantic.class_mix_masks(source, pool)

    def mix(self, masks: torch.Tensor, source_images: torch.Tensor, target_images: torch.Tensor,
            source: DenseTargets, pseudo: DenseTargets) -> Tuple[torch.Tensor, DenseTargets]:
        """Images and weights mixed as the semantic task; the label maps mixed (pasted
        instances keep their ids, made unique) and their targets generated anew."""
        images, semantic = self.semantic.mix(masks, source_images, target_images, source, pseudo)
        panoptic = mix_panoptic_maps(masks, source.maps[PAN_SEG], pseudo.maps[PAN_SEG],
                                     self.settings.label_divisor)
        return images, self.targets_from_panoptic(panoptic, semantic.weight)

    # ------------------------------------------------------------------ inference
    def postprocess(self, outputs: Outputs, image_size, height: int, width: int) -> Outputs:
        """One image at its original size: semantic logits, and the panoptic segmentation
        ``(ids, None)`` as Detectron2's ``PanopticDeepLab`` returns it (``class *
        label_divisor + k`` for things, ``class * label_divisor`` for stuff, -1 void)."""
        s = self.settings
        post_processing, _ = _panoptic_deeplab()
        logits = sem_seg_postprocess(outputs[SEM_SEG], image_size, height, width)
        center = sem_seg_postprocess(outputs[CENTER], image_size, height, width)
        offset = resize_offsets(outputs[OFFSET], image_size, height, width)
        classes = logits.argmax(dim=0, keepdim=True)
        panoptic, _ = post_processing.get_panoptic_segmentation(
            classes, center, offset, thing_ids=set(s.thing_ids), label_divisor=s.label_divisor,
            stuff_area=s.stuff_area_at(height, width), void_label=-1,
            threshold=s.center_threshold, nms_kernel=s.nms_kernel,
            top_k=min(s.top_k, height * width))  # Detectron2's topk fails on smaller images
        return {SEM_SEG: logits, "panoptic_seg": (panoptic[0], None)}


def resize_offsets(offset: torch.Tensor, image_size, height: int, width: int) -> torch.Tensor:
    """(2, H, W) offsets of the unpadded ``image_size`` part, resized to (height, width) with
    their values scaled by the same factors (an offset is a distance in pixels)."""
    ih, iw = image_size
    offset = offset[:, :ih, :iw]
    if (ih, iw) == (height, width):
        return offset
    scale = offset.new_tensor([height / ih, width / iw]).view(2, 1, 1)
    return F.interpolate(offset[None], size=(height, width), mode="bilinear",
                         align_corners=False)[0] * scale


def panoptic_metadata_ids(metadata) -> Tuple[List[int], int]:
    """(thing train ids, label divisor) of a panoptic data set's metadata."""
    return (sorted(int(v) for v in metadata.thing_dataset_id_to_contiguous_id.values()),
            int(metadata.label_divisor))

