"""int8 post-training quantisation of an exported model with ONNX Runtime's own tools.

Static quantisation: activation ranges are calibrated on a few hundred *target-domain training
images* -- images a user has, without labels (only the images are read) -- then weights
(per output channel, int8) and activations (per tensor, uint8) are stored as
QuantizeLinear/DequantizeLinear pairs (QDQ), which ONNX Runtime fuses into integer kernels.
The graph is first prepared by ``quant_pre_process`` (ONNX shape inference and ONNX Runtime's
graph optimisations); its symbolic shape inference is skipped because it cannot follow the
dynamic height/width of an exported network, and the quantiser does not need it.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional

import numpy as np

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["QuantisationSettings", "quantize_int8", "ImageCalibrationReader",
           "calibration_images", "CALIBRATION_METHODS"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QuantisationSettings:
    """How the int8 model is made: calibration method (``minmax``: observed ranges;
    ``percentile``: ranges clipped at ``percentile``; ``entropy``: KL-optimal ranges) and
    per-channel weight scales."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True

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

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    reader = ImageCalibrationReader(input_name or INPUT_NAME, images)
    extra = {"CalibPercentile": settings.percentile} if settings.method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="duda_quantize_") as work:
        prepared = os.path.join(work, "prepared.onnx")
        quantized = os.path.join(work, "int8.onnx")
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, quantized, reader, quant_format=QuantFormat.QDQ,
                        per_channel=settings.per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[settings.method],
                        extra_options=extra)
        if reader.count == 0:
            raise ValueError("no calibration image was given: int8 ranges cannot be calibrated")
        report = {"calibration_images": reader.count, "method": settings.method,
                  "per_channel": settings.per_channel}
        if settings.method == "percentile":
            report["percentile"] = settings.percentile
        model = onnx.load(quantized)
        metadata = {**read_onnx_metadata(fp32_path), "quantisation": report}
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        atomic_write_bytes(int8_path, model.SerializeToString())
    return report
