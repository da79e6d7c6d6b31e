"""Running an exported model with ONNX Runtime, and scoring it with Detectron2's evaluators.

``OnnxSegmenter`` is the ten-line deployment path (uint8 RGB in, named maps out).
``OnnxSegmentorModel`` wraps it as a Detectron2 model (list of dataset records in, one
``{"sem_seg": ...}`` per image at its original size out), so ``inference_on_dataset`` scores
an ONNX file with the same test loader, task post-processing and evaluator as
``tools/train_net.py --eval-only`` scores the PyTorch model.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .onnx_export import METADATA_KEY

__all__ = ["OnnxSegmenter", "OnnxSegmentorModel", "session_options"]


def session_options(threads: Optional[int] = None):
    """ONNX Runtime session options: all graph optimisations, ``threads`` intra-op threads
    (None: ONNX Runtime's default, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


class OnnxSegmenter:
    """An exported model in an ONNX Runtime CPU session: ``segmenter(images)`` with uint8
    (N, 3, H, W) RGB images returns ``{output name: float32 array}``."""

    def __init__(self, path: str, threads: Optional[int] = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file '{path}' does not exist; write one with "
                                    f"tools/export_student.py --format onnx")
        import onnxruntime as ort

        self.path = path
        self.session = ort.InferenceSession(path, session_options(threads),
                                            providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        # From the session (parsing the file again would hold a second copy of the weights).
        custom = self.session.get_modelmeta().custom_metadata_map
        self.metadata = json.loads(custom[METADATA_KEY]) if METADATA_KEY in custom else {}

    def __call__(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """The model's outputs by name for uint8 RGB ``images`` (N, 3, H, W)."""
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 RGB images (N, 3, H, W), got {images.dtype} "
                             f"{images.shape}")
        outputs = self.session.run(None, {self.input_name: images})
        return dict(zip(self.output_names, outputs))


class OnnxSegmentorModel(nn.Module):
    """An ONNX file as a Detectron2 inference model: each record's ``image`` (3, H, W, RGB, as
    the test mapper gives it) runs alone (batch 1, its own size: no padding) and ``task``
    brings the maps to the record's ``height`` x ``width``, as ``SegmentorBase.predict``
    does."""

    def __init__(self, segmenter: OnnxSegmenter, task):
        super().__init__()
        self.segmenter, self.task = segmenter, task

    def forward(self, batched_inputs: List[dict]) -> List[Dict[str, torch.Tensor]]:
        results = []
        for record in batched_inputs:
            image = record["image"]
            if image.dtype != torch.uint8:  # the mapper's float copy of uint8 pixels
                image = image.round().clamp(0, 255).to(torch.uint8)
            maps = self.segmenter(image[None].numpy())
            size = tuple(image.shape[-2:])
            one = {name: torch.from_numpy(value[0]) for name, value in maps.items()}
            results.append(self.task.postprocess(one, size, record.get("height", size[0]),
                                                 record.get("width", size[1])))
        return results
