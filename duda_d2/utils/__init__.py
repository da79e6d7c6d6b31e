"""Tool support: model analysis (parameters, FLOPs) and benchmarking helpers."""
