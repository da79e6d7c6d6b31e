"""The plain segmentor and what every meta-architecture shares.

``SegmentorBase`` holds the task (``modeling/tasks``), the pixel normalisation, test-time
inference (whole image or sliding window) of the network the meta-architecture evaluates, and
the routing of training passes through DDP (``TrainingPasses``). ``UDASegmentor`` adds one
network trained on labelled images (source-only or target-oracle training).

Inputs follow Detectron2's ``SemanticSegmentor`` contract -- dicts with ``image`` (C, H, W,
uint8, in ``INPUT.FORMAT``) and, in training, the task's targets; inference returns one dict
per image at its original size (for semantic segmentation ``{"sem_seg": logits}``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from ..inference import slide_inference, whole_inference
from ..network import SegmentationNetwork, build_segmentation_network
from ..tasks import Task, UDABatch, build_task
from .loss_stages import Backward, LossStages
from .training_passes import TrainingPasses

__all__ = ["SegmentorBase", "UDASegmentor", "InferenceSettings", "batch_images"]


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

    def __call__(self, network: nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.mode == "slide":
            return slide_inference(network, images, self.crop_size, self.stride)
        return whole_inference(network, images)


def batch_images(batched_inputs: List[dict], key: str, pixel_mean: torch.Tensor,
                 pixel_std: torch.Tensor, size_divisibility: int) -> ImageList:
    """Normalise ``x[key]`` of every input and pad them into one ``ImageList``."""
    images = [(x[key].to(pixel_mean.device) - pixel_mean) / pixel_std for x in batched_inputs]
    return ImageList.from_tensors(images, size_divisibility)


class SegmentorBase(nn.Module):
    """Task, pixel statistics, inference and training passes; subclasses say which networks
    they train (``trainable_networks``), which one they evaluate (``inference_network``) and
    what one training step's losses are (``training_losses``)."""

    def __init__(self, *, task: Task, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float], inference: InferenceSettings = InferenceSettings()):
        super().__init__()
        self.task = task
        self.inference_settings = inference
        self.pixel_statistics = (list(pixel_mean), list(pixel_std))  # plain floats
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # Training passes of the trainable networks (through DDP with several processes).
        self.passes = TrainingPasses()

    @classmethod
    def base_arguments(cls, cfg) -> dict:
        return {"task": build_task(cfg), "pixel_mean": cfg.MODEL.PIXEL_MEAN,
                "pixel_std": cfg.MODEL.PIXEL_STD,
                "inference": InferenceSettings.from_config(cfg)}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def trainable_networks(self) -> List[SegmentationNetwork]:
        """The networks that learn by gradient descent (each gets its own DDP wrapper)."""
        raise NotImplementedError

    def inference_network(self) -> SegmentationNetwork:
        """The network evaluation and export use."""
        raise NotImplementedError

    def training_losses(self, batched_inputs, stages: LossStages) -> None:
        raise NotImplementedError

    def images(self, batched_inputs: List[dict], size_divisibility: int) -> ImageList:
        return batch_images(batched_inputs, "image", self.pixel_mean, self.pixel_std,
                            size_divisibility)

    def uda_batch(self, source: List[dict], target: List[dict]) -> UDABatch:
        """Normalised, padded source/target images and the padded source targets."""
        div = max(n.size_divisibility for n in self.trainable_networks())
        xs, xt = self.images(source, div), self.images(target, div)
        return UDABatch(xs.tensor, self.task.source_targets(source, xs), xt.tensor)

    def forward(self, batched_inputs, backward: Optional[Backward] = None):
        """Training: the loss dict; with ``backward`` (see ``LossStages``) the losses are
        already back-propagated stage by stage and returned detached. Inference: one output
        dict per image at its original size."""
        if self.training:
            stages = LossStages(backward)
            self.training_losses(batched_inputs, stages)
            return stages.losses
        network = self.inference_network()
        images = self.images(batched_inputs, network.size_divisibility)
        return self.predict(batched_inputs, images, network)

    def predict(self, batched_inputs: List[dict], images: ImageList,
                network: nn.Module) -> List[Dict[str, torch.Tensor]]:
        """``network``'s outputs at each input's original (height, width)."""
        outputs = self.inference_settings(network, images.tensor)
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            one = {name: value[i] for name, value in outputs.items()}
            results.append(self.task.postprocess(one, image_size, height, width))
        return results


@META_ARCH_REGISTRY.register()
class UDASegmentor(SegmentorBase):
    """One network trained on labelled images with the task's supervised loss."""

    @configurable
    def __init__(self, *, network: SegmentationNetwork, **kwargs):
        super().__init__(**kwargs)
        self.network = network

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {**cls.base_arguments(cfg), "network": build_segmentation_network(cfg)}

    def trainable_networks(self) -> List[SegmentationNetwork]:
        return [self.network]

    def inference_network(self) -> SegmentationNetwork:
        return self.network

    def training_losses(self, batched_inputs: List[dict], stages: LossStages) -> None:
        images = self.images(batched_inputs, self.network.size_divisibility)
        targets = self.task.source_targets(batched_inputs, images)
        outputs = self.passes(self.network, images.tensor, last=True)
        stages.add({self.task.supervised_loss_name: self.task.supervised_loss(outputs, targets)})
