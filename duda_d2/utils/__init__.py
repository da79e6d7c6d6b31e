"""Support code: model analysis (parameters, FLOPs), benchmarking helpers, run reuse, and the
atomic file writer every saved file goes through."""
