"""int8 post-training quantisation of an exported model with ONNX Runtime's own tools.

Static quantisation: activation ranges are calibrated on a few hundred *target-domain training
images* -- images a user has, without labels (only the images are read) -- then weights
(per output channel, int8) and activations (per tensor, uint8) are stored as
QuantizeLinear/DequantizeLinear pairs (QDQ), which ONNX Runtime fuses into integer kernels.
Attention stays in float (``keep_attention_float``, the default): the MatMuls of two activations
(queries x keys, weights x values) and the Softmax between them. Measured on MiT-B0 at
512x1024 on a 2-core AVX-512 VNNI CPU (tools/benchmark_deploy.py), quantising them made the
model slower than ONNX Runtime fp32 (QLinearMatMul 115 ms vs 108 ms, QLinearSoftmax 86 ms vs
47 ms per image), while quantising only the weighted layers (convolutions, linear layers) and
the element-wise operations around them gives 1.3x over fp32.

The graph is first prepared by ``quant_pre_process`` (ONNX shape inference and ONNX Runtime's
graph optimisations); its symbolic shape inference is skipped because it cannot follow the
dynamic height/width of an exported network, and the quantiser does not need it.
"""
from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional

import numpy as np

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["QuantisationSettings", "quantize_int8", "ImageCalibrationReader",
           "calibration_images", "attention_nodes", "CALIBRATION_METHODS"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QuantisationSettings:
    """How the int8 model is made: calibration method (``minmax``: observed ranges;
    ``percentile``: ranges clipped at ``percentile``; ``entropy``: KL-optimal ranges),
    per-channel weight scales, and whether attention stays in float."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    keep_attention_float: bool = True

    def __post_init__(self):
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method {self.method!r} unknown; use one of "
                             f"{CALIBRATION_METHODS}")
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError(f"calibration percentile {self.percentile} must be in [90, 100]")


def _calibration_reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self, input_name: str, images: Iterable[np.ndarray]):
            self.input_name, self._images, self.count = input_name, iter(images), 0

        def get_next(self):
            image = next(self._images, None)
            if image is None:
                return None
            self.count += 1
            return {self.input_name: np.ascontiguousarray(image[None].astype(np.uint8))}

    return _Reader


def attention_nodes(model) -> List[str]:
    """Names of the nodes of an ONNX ``model`` that compute attention: MatMuls none of whose
    inputs is a constant (an initializer or a Constant node's output), i.e. activation x
    activation products, and Softmax nodes."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "Softmax" or (n.op_type == "MatMul" and
                                          not any(i in constants for i in n.input))]


def ImageCalibrationReader(input_name: str, images: Iterable[np.ndarray]):
    """ONNX Runtime's ``CalibrationDataReader`` over uint8 (3, H, W) images, one per batch."""
    return _calibration_reader_class()(input_name, images)


def calibration_images(cfg, dataset_name: str, num_images: int, seed: int = 0
                       ) -> Iterator[np.ndarray]:
    """``num_images`` images of ``dataset_name`` (a random subset, fixed by ``seed``) as the
    test mapper gives them (resized to ``INPUT.TEST_SIZE``), uint8 (3, H, W). Labels are not
    read: a target training set without labels works."""
    from detectron2.data import DatasetCatalog

    from ..data.mappers import SemSegDatasetMapper

    records = DatasetCatalog.get(dataset_name)
    if not records:
        raise ValueError(f"calibration data set '{dataset_name}' has no images")
    order = np.random.default_rng(seed).permutation(len(records))[:num_images]
    mapper = SemSegDatasetMapper(cfg, is_train=False, with_labels=False)
    for index in sorted(order.tolist()):
        record = {k: v for k, v in records[index].items() if k != "sem_seg_file_name"}
        yield mapper(record)["image"].numpy()


def quantize_int8(fp32_path: str, int8_path: str, images: Iterable[np.ndarray],
                  settings: QuantisationSettings = QuantisationSettings(),
                  input_name: Optional[str] = None) -> dict:
    """Write the int8 (QDQ) model of ``fp32_path`` to ``int8_path`` atomically, calibrated on
    ``images``; returns ``{"calibration_images": n, ...settings}``. The fp32 file's metadata
    is kept, with the quantisation recorded in it."""
    import json

    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_export import INPUT_NAME, METADATA_KEY, read_onnx_metadata

    images = iter(images)
    first = next(images, None)
    if first is None:
        raise ValueError("no calibration image was given: int8 ranges cannot be calibrated")
    images = itertools.chain([first], images)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    reader = ImageCalibrationReader(input_name or INPUT_NAME, images)
    extra = {"CalibPercentile": settings.percentile} if settings.method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="duda_quantize_") as work:
        prepared = os.path.join(work, "prepared.onnx")
        quantized = os.path.join(work, "int8.onnx")
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        excluded = (attention_nodes(onnx.load(prepared)) if settings.keep_attention_float
                    else [])
        quantize_static(prepared, quantized, reader, quant_format=QuantFormat.QDQ,
                        per_channel=settings.per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[settings.method],
                        nodes_to_exclude=excluded, extra_options=extra)
        report = {"calibration_images": reader.count, "method": settings.method,
                  "per_channel": settings.per_channel, "float_nodes": len(excluded)}
        if settings.method == "percentile":
            report["percentile"] = settings.percentile
        model = onnx.load(quantized)
        metadata = {**read_onnx_metadata(fp32_path), "quantisation": report}
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        atomic_write_bytes(int8_path, model.SerializeToString())
    return report
