"""Errors a user can fix, told apart from bugs so that command-line tools can print the
message alone (``error: ...``, non-zero exit) and keep tracebacks for real bugs."""
from __future__ import annotations

import errno
import os
import traceback

__all__ = ["UserError", "is_user_error", "user_message"]


class UserError(Exception):
    """A bad input: a missing or wrong file, a bad config value, a busy output folder."""


# Modules whose deliberate errors are the user's to fix: our own, and the config system.
_YACS = os.sep + "yacs" + os.sep
_OWN = (os.sep + "duda_d2" + os.sep, os.sep + "tools" + os.sep, _YACS,
        os.sep + "datasets" + os.sep + "prepare_")


def is_user_error(error: BaseException) -> bool:
    """A ``UserError``; a full disk; or a ValueError/FileNotFoundError/KeyError/RuntimeError
    that our code (or the config system) raised on purpose -- not one from deep in torch."""
    if isinstance(error, UserError):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    where = frames[-1].filename
    if isinstance(error, AssertionError):  # yacs asserts on unknown keys given as KEY VALUE
        return _YACS in where
    if not isinstance(error, (ValueError, FileNotFoundError, KeyError, RuntimeError)):
        return False
    return any(part in where for part in _OWN)


def user_message(error: BaseException) -> str:
    """The message alone (a KeyError's without its quotes), ending with the OS reason."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"{error.filename or 'writing'}: No space left on device"
    return str(error)
