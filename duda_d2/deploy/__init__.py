"""Deployment of a trained network: the module a device runs (``deployable``), its ONNX export
(``onnx_export``), ONNX Runtime inference and evaluation (``onnx_runtime``) and int8
post-training quantisation with ONNX Runtime's tools (``quantize``).

Submodules are imported where they are used: ``onnxruntime`` is only needed by the last two.
"""
