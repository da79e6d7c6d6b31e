"""Errors a user can fix, told apart from bugs so that command-line tools can print the
message alone (``error: ...``, exit code 1) and keep tracebacks for real bugs.

A user error is a ``UserError`` (``DatasetNotFoundError`` and ``RunLockError`` are ones); a
full disk anywhere in the exception's chain (torch reports it as its own RuntimeError); a
ValueError / FileNotFoundError / KeyError / RuntimeError that a ``raise`` statement of this
project raised (a tensor operation failing inside our code is a bug, not a message); or the
config system's refusal of a key or value. ``--debug`` or ``DUDA_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable, Iterator, Optional, TypeVar

__all__ = ["UserError", "is_user_error", "user_message", "exit_on_user_error"]

T = TypeVar("T")


class UserError(Exception):
    """A bad input: a missing or wrong file, a bad config value, a busy output folder."""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REPO = os.path.dirname(_PACKAGE)
# Where this project's deliberate errors are raised: the package, its tools and scripts.
_OWN = tuple(os.path.join(d, "") for d in (_PACKAGE, os.path.join(_REPO, "tools"),
                                            os.path.join(_REPO, "datasets")))
# The config system: unknown keys, type mismatches, a missing config (or _BASE_) file.
_CONFIG_SYSTEM = tuple(os.path.join(*parts) for parts in (
    ("yacs", "config.py"), ("fvcore", "common", "config.py"),
    ("detectron2", "config", "config.py")))
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or while handling."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _disk_full(error: BaseException) -> Optional[OSError]:
    return next((e for e in _chain(error)
                 if isinstance(e, OSError) and e.errno in _DISK_FULL), None)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is the user's to fix (see the module docstring), not a bug."""
    if isinstance(error, UserError) or _disk_full(error) is not None:
        return True
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    where = frames[-1]
    if where.filename.endswith(_CONFIG_SYSTEM):
        return isinstance(error, (AssertionError, KeyError, ValueError))
    return (isinstance(error, (ValueError, FileNotFoundError, KeyError, RuntimeError))
            and os.path.abspath(where.filename).startswith(_OWN)
            and (where.line or "").startswith("raise"))


def _file_being_written(error: BaseException, full: OSError) -> str:
    """The file ``atomic_write_bytes`` was writing when the disk filled up, if it was."""
    for e in _chain(error):
        for frame, _ in traceback.walk_tb(e.__traceback__):
            if frame.f_code.co_name == "atomic_write_bytes" and "path" in frame.f_locals:
                return str(frame.f_locals["path"])
    return full.filename or "a file"


def user_message(error: BaseException) -> str:
    """The message alone (a KeyError's without its quotes); a full disk's ends with the OS
    reason, "No space left on device"."""
    full = _disk_full(error)
    if full is not None:
        return (f"cannot write '{_file_being_written(error, full)}' (free space on its disk, "
                f"or write to another one): {os.strerror(full.errno)}")
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


def exit_on_user_error(run: Callable[[], T], debug: bool = False) -> T:
    """``run()``; a user error ends the process with one ``error: <message>`` on stderr and
    exit code 1 -- with its traceback where ``debug`` or ``DUDA_DEBUG=1``. Bugs keep theirs."""
    try:
        return run()
    except Exception as error:
        if debug or os.environ.get("DUDA_DEBUG", "0") not in ("", "0") \
                or not is_user_error(error):
            raise
        print(f"error: {user_message(error)}", file=sys.stderr)
        raise SystemExit(1) from None
