"""Debug panels of a UDA step (source + labels, target + pseudo-labels, ClassMix mask, the
student's prediction on the mix), written to Detectron2's event storage with ``put_image`` --
as ``GeneralizedRCNN`` writes its proposals -- for the TensorBoard writer to show."""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from detectron2.utils.visualizer import Visualizer

from .tasks import DenseTargets, MixedBatch

__all__ = ["put_debug_panels", "colour_labels"]


def colour_labels(image: torch.Tensor, labels: torch.Tensor, metadata) -> torch.Tensor:
    """(3, H, W) in [0, 1]: ``labels`` (H, W) drawn over ``image`` (3, H, W, uint8)."""
    canvas = image.permute(1, 2, 0).cpu().numpy()
    drawn = Visualizer(canvas, metadata).draw_sem_seg(labels.cpu().numpy(), alpha=0.6)
    return torch.from_numpy(np.ascontiguousarray(drawn.get_image())).permute(2, 0, 1) / 255.0


def put_debug_panels(storage, metadata, task, source: List[dict], target: List[dict],
                     pseudo: DenseTargets, mixed: MixedBatch) -> None:
    """The first source/target pair's panels, as ``debug/<name>`` images."""
    source_image, target_image = source[0]["image"], target[0]["image"]
    height, width = target_image.shape[-2:]
    panels = {
        "source_label": (source_image, task.input_class_map(source[0])),
        "target_pseudo_label": (target_image, task.class_map(pseudo)[0, :height, :width]),
        "mix_mask": (source_image, mixed.masks[0, 0, :height, :width].long() * 13),
        "mix_prediction": (target_image,
                           task.predicted_classes(mixed.student_outputs, (height, width))[0]),
    }
    for name, (image, labels) in panels.items():
        storage.put_image(f"debug/{name}", colour_labels(image, labels, metadata))
