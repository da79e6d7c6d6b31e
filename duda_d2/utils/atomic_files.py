"""Atomic file writes: a crash (or a full disk) never leaves a truncated file behind.

Checkpoints, exported and converted weights and every file of the dataset preparation go
through ``atomic_write_bytes``: the content is written to a hidden temporary file in the target
folder, flushed and fsynced, then moved over the target with ``os.replace`` (atomic within one
file system), so a reader sees the old file or the new one, never a part of it. An interrupted
run therefore leaves nothing a re-run could mistake for finished work; what a kill leaves is a
hidden ``.tmp_<name>.<pid>.<8 hex>`` file, which the trainer removes at start-up
(``duda_d2.engine.run_lock.remove_stale_temporaries``, holding the run's lock).
"""
from __future__ import annotations

import os
import re
import secrets
from typing import BinaryIO, Callable, Optional, Union

__all__ = ["atomic_write_bytes", "temporary_writer_pid"]

WriteFn = Callable[[BinaryIO], object]
TEMP_PREFIX = ".tmp_"
# The temporary's name: TEMP_PREFIX, the target's name, the writer's pid, 8 random hex digits.
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r".+\.(\d+)\.[0-9a-f]{8}")


def atomic_write_bytes(path: str, data_or_write_fn: Union[bytes, WriteFn]) -> None:
    """Atomically replace ``path`` with ``data_or_write_fn``: bytes, or a function that writes
    the content to the binary file it is given (``lambda f: torch.save(obj, f)``).

    Parent folders are created; the file gets the usual permissions (0666 less the umask). On
    any error the temporary file (``.tmp_<name>...``) is removed and ``path`` is left as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{TEMP_PREFIX}{name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as f:
            if callable(data_or_write_fn):
                data_or_write_fn(f)
            else:
                f.write(data_or_write_fn)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def temporary_writer_pid(name: str) -> Optional[int]:
    """The pid of the process that wrote the temporary ``name`` (a file name), None where
    ``name`` is not one of ``atomic_write_bytes``'s temporaries."""
    match = _TEMP_NAME.fullmatch(name)
    return int(match[1]) if match else None
