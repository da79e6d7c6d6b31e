from .segformer import SegFormerHead  # noqa: F401
