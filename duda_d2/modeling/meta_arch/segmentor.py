"""``UDASegmentor``: a plain backbone + head segmentor (source-only or target-oracle training).

It follows Detectron2's ``SemanticSegmentor`` contract -- inputs are dicts with ``image``
(C, H, W, uint8, in ``INPUT.FORMAT``) and, in training, ``sem_seg`` (H, W, long); inference
returns ``[{"sem_seg": logits (C, height, width)}]`` at the original image size -- with the loss
and inference modes the UDA meta-architectures share.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from ...uda.losses import weighted_cross_entropy
from ..inference import slide_inference, whole_inference
from ..network import SegmentationNetwork, build_segmentation_network
from .loss_stages import Backward, LossStages
from .training_passes import TrainingPasses

__all__ = ["UDASegmentor", "InferenceSettings", "batch_images", "batch_targets"]


class InferenceSettings:
    """How a network is applied at test time: ``whole`` image or ``slide`` windows."""

    def __init__(self, mode: str = "whole", crop_size: Sequence[int] = (512, 512),
                 stride: Sequence[int] = (341, 341)):
        if mode not in ("whole", "slide"):
            raise ValueError(f"MODEL.INFERENCE.MODE={mode!r} unknown; use 'whole' or 'slide'")
        self.mode, self.crop_size, self.stride = mode, tuple(crop_size), tuple(stride)

    @classmethod
    def from_config(cls, cfg) -> "InferenceSettings":
        c = cfg.MODEL.INFERENCE
        return cls(c.MODE, c.CROP_SIZE, c.STRIDE)

    def __call__(self, network: nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
        if self.mode == "slide":
            return slide_inference(network, images, self.crop_size, self.stride, num_classes)
        return whole_inference(network, images)


def batch_images(batched_inputs: List[dict], key: str, pixel_mean: torch.Tensor,
                 pixel_std: torch.Tensor, size_divisibility: int) -> ImageList:
    """Normalise ``x[key]`` of every input and pad them into one ``ImageList``."""
    images = [(x[key].to(pixel_mean.device) - pixel_mean) / pixel_std for x in batched_inputs]
    return ImageList.from_tensors(images, size_divisibility)


def batch_targets(batched_inputs: List[dict], images: ImageList, ignore_value: int) -> torch.Tensor:
    """Stack ``sem_seg`` label maps, padded with ``ignore_value`` to the padded image size."""
    targets = [x["sem_seg"].to(images.tensor.device) for x in batched_inputs]
    size = images.tensor.shape[-2:]
    out = targets[0].new_full((len(targets), *size), ignore_value)
    for i, t in enumerate(targets):
        out[i, : t.shape[0], : t.shape[1]] = t
    return out


@META_ARCH_REGISTRY.register()
class UDASegmentor(nn.Module):
    """One network trained with cross-entropy on labelled images (ignore label excluded)."""

    @configurable
    def __init__(self, *, network: SegmentationNetwork, num_classes: int,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 ignore_value: int = 255, inference: InferenceSettings = InferenceSettings()):
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.inference_settings = inference
        self.pixel_statistics = (list(pixel_mean), list(pixel_std))  # plain floats
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # Training passes of the trainable networks (through DDP with several processes).
        self.passes = TrainingPasses()

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {
            "network": build_segmentation_network(cfg),
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "inference": InferenceSettings.from_config(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def trainable_networks(self) -> List[SegmentationNetwork]:
        """The networks that learn by gradient descent (each gets its own DDP wrapper)."""
        return [self.network]

    def forward(self, batched_inputs: List[dict], backward: Optional[Backward] = None):
        """Training: the loss dict; with ``backward`` (see ``LossStages``) the losses are
        already back-propagated and returned detached. Inference: per-image logits."""
        images = batch_images(batched_inputs, "image", self.pixel_mean, self.pixel_std,
                              self.network.size_divisibility)
        if self.training:
            targets = batch_targets(batched_inputs, images, self.ignore_value)
            logits = self.passes(self.network, images.tensor, last=True)
            stages = LossStages(backward)
            stages.add({"loss_sem_seg": weighted_cross_entropy(logits, targets,
                                                               ignore_index=self.ignore_value)})
            return stages.losses
        return self.predict(batched_inputs, images, self.network)

    def predict(self, batched_inputs: List[dict], images: ImageList,
                network: nn.Module) -> List[Dict[str, torch.Tensor]]:
        """Logits of ``network`` at each input's original (height, width)."""
        logits = self.inference_settings(network, images.tensor, self.num_classes)
        results = []
        for logit, x, image_size in zip(logits, batched_inputs, images.image_sizes):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            results.append({"sem_seg": sem_seg_postprocess(logit, image_size, height, width)})
        return results
