from .segmentor import UDASegmentor  # noqa: F401
