"""Atomic PNG writing: an interrupted prepare script never leaves a truncated image or label."""
from __future__ import annotations

import cv2
import numpy as np

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["write_png"]


def write_png(path: str, array: np.ndarray) -> None:
    """Atomically write a uint8 (H, W) label or (H, W, 3) RGB image as PNG."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write_bytes(path, buf.tobytes())
