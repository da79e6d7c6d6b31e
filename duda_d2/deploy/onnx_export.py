"""ONNX export of a deployable module through ``torch.export`` (PyTorch's dynamo exporter).

Why ``torch.export`` and not TorchScript tracing: TorchScript is deprecated in PyTorch 2 and a
trace fixes the image size, while ``torch.export`` records symbolic shapes, so one file runs
at any height and width (MiT, the ResNets and the heads only need sizes that survive their
strides; nothing is padded inside). The exported graph is checked by ONNX's checker and
carries, as metadata (``metadata_props["duda_d2"]``, JSON), what a device needs besides the
graph: the input convention, the output names, the class names and colours and, for a panoptic
network, its post-processing settings (see ``tools/export_student.py``).

If a network cannot be exported with symbolic shapes (a backbone that branches on the input
size), the export falls back to the example's fixed size, says so in a warning and records
``"dynamic_shapes": false`` in the metadata.
"""
from __future__ import annotations

import json
import logging
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["export_onnx", "read_onnx_metadata", "METADATA_KEY", "OPSET", "INPUT_NAME"]

logger = logging.getLogger(__name__)

METADATA_KEY = "duda_d2"
# ONNX Runtime 1.17+ implements opset 18 fully (ReduceMean with axes inputs, Resize with
# antialias attributes); the issue asks for at least 17.
OPSET = 18
INPUT_NAME = "image"
# Symbolic batch and image sizes: from one stride-32 cell to 8k.
MIN_SIDE, MAX_SIDE, MAX_BATCH = 32, 8192, 1024
# The example a symbolic export traces: a batch of 2 and two stride-32 cells or more per side,
# unequal, so that no size is specialised (torch.export fixes a dimension whose example is 1,
# e.g. a one-cell stride-32 map, and may unify equal ones).
DYNAMIC_EXAMPLE = (2, 3, 64, 96)


def _check_exporter() -> None:
    """torch.onnx's dynamo exporter translates through onnxscript, which torch does not
    install: say so instead of failing inside the exporter."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise RuntimeError("the ONNX export needs the onnxscript package (torch.onnx's "
                           "exporter uses it): `make` installs it; elsewhere run "
                           "`pip install onnx onnxscript onnxruntime`") from None


def _export(module: nn.Module, example: torch.Tensor, names: Sequence[str], opset: int,
            dynamic: bool):
    kwargs = {}
    if dynamic:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
        width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
        kwargs["dynamic_shapes"] = {"images": {0: batch, 2: height, 3: width}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
        return torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                 input_names=[INPUT_NAME], output_names=list(names),
                                 external_data=False, verbose=False, **kwargs)


def _uint8_images(shape: Sequence[int]) -> torch.Tensor:
    return torch.randint(0, 256, tuple(shape), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def export_onnx(module: nn.Module, path: str, names: Sequence[str],
                metadata: Optional[dict] = None, static_size: Sequence[int] = (512, 1024),
                opset: int = OPSET, dynamic: bool = True) -> dict:
    """Export ``module`` (uint8 images (N, 3, H, W) in, ``names`` out) to ``path`` atomically.

    With ``dynamic`` the batch, height and width are symbolic; without it (or when the
    network cannot be exported so) the input is one image of ``static_size`` (H, W). Returns the
    metadata written (``metadata`` plus the input/output convention and whether the shapes are
    dynamic)."""
    _check_exporter()
    module = module.eval()
    program, used_dynamic = None, dynamic
    example = _uint8_images((1, 3, *static_size))
    if dynamic:
        try:
            program = _export(module, _uint8_images(DYNAMIC_EXAMPLE), names, opset, True)
        except Exception as error:  # noqa: BLE001 -- any exporter failure: try a fixed size
            logger.warning(f"ONNX export with a symbolic batch/height/width failed "
                           f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                           f"exporting at the fixed size {tuple(static_size)} instead")
            used_dynamic = False
    if program is None:
        program = _export(module, example, names, opset, False)
    metadata = dict(metadata or {})
    channels = metadata.pop("channels", "RGB")  # the config's INPUT.FORMAT
    info = {**metadata, "input": {"name": INPUT_NAME, "dtype": "uint8",
                                  "layout": "NCHW", "channels": channels},
            "outputs": list(names), "dynamic_shapes": used_dynamic, "opset": opset}
    if not used_dynamic:
        info["input"]["shape"] = list(example.shape)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    proto.producer_name = "duda_d2"
    import onnx

    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return info


def read_onnx_metadata(path: str) -> dict:
    """The ``duda_d2`` metadata of an exported ONNX file ({} for a file without it)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}
