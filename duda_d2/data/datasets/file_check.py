"""A cheap check that a dataset file is a whole image, without decoding it.

An interrupted copy or extraction, a full disk or a crash leaves image files that exist but are
empty, cut short or filled with zeros; a download can be an HTML error page saved as ``.png``.
Training would read such a file only when its image is first sampled, possibly hours in.
``file_problem`` finds them when a dataset's records are read, at a cost small enough to run on
every file of a split (all datasets of the project are PNG): it reads a PNG's first 33 bytes
(signature and ``IHDR`` header) and its last 1 KiB (the ``IEND`` end chunk, which a truncated
file lacks), about 7 us per file with a warm file cache (0.35 s for GTA5's 50k images and labels;
PIL's header-only ``Image.open`` takes about 16 us). Other formats get PIL's header check. A file
whose compressed data is damaged in the middle passes; the data loader reports it when it reads
it.
"""
from __future__ import annotations

import os
import struct
from typing import Iterable, List, Optional, Tuple

__all__ = ["file_problem", "broken_files"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The IEND chunk's type and CRC: a PNG's last 8 bytes (decoders ignore data after it).
PNG_END = b"IEND\xaeB`\x82"
_TAIL = 1024  # how far from the end the end chunk is looked for


def _png_problem(path: str, size: int) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(33)  # signature, IHDR length and type, width, height, ...
        if head[:8] != PNG_SIGNATURE:
            return "not a PNG file"
        if len(head) < 24 or head[12:16] != b"IHDR" or 0 in struct.unpack(">II", head[16:24]):
            return "damaged PNG header"
        f.seek(max(0, size - _TAIL))
        if PNG_END not in f.read(_TAIL):
            return "truncated PNG (no end chunk)"
    return None


def _pil_problem(path: str) -> Optional[str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):  # reads and checks the header only
            return None
    except UnidentifiedImageError:
        return "cannot identify the image format"


def file_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a whole image file ("0 bytes", "not a PNG file", "truncated PNG (no
    end chunk)", ...), or None when its header and end look right."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "0 bytes"
        if path.lower().endswith(".png"):
            return _png_problem(path, size)
        return _pil_problem(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def broken_files(paths: Iterable[str]) -> List[Tuple[str, str]]:
    """``(path, problem)`` of every file of ``paths`` that ``file_problem`` rejects."""
    found = ((path, file_problem(path)) for path in paths)
    return [(path, problem) for path, problem in found if problem is not None]
