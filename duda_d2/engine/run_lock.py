"""One training per ``OUTPUT_DIR``: a lock file ``OUTPUT_DIR/.lock``.

Two trainings writing to one folder would interleave their checkpoints, ``config.yaml`` and
``metrics.json``. The first takes the lock: the file is created with ``O_CREAT | O_EXCL``
(atomic, also on NFS) and holds its process id, host name and process start time. A second
run fails at once with a :class:`RunLockError` naming that process and host. A lock left by a
killed run is taken over only when its process is known to be dead: same host and no such
process (or the id now belongs to a process started later). A lock of another host is never
taken over: this host cannot see its processes (delete the file once that run is over).

In a multi-process or multi-node run only the main process (``comm.is_main_process()``)
writes to ``OUTPUT_DIR``, so only it takes the lock. The lock is re-entrant within a process
(``tools/train_net.py`` takes it before ``default_setup`` writes, ``UDATrainer`` again) and
is released when the last holder releases it, or when the process exits. The holder removes
the partial files a killed run's atomic writes left (``remove_stale_temporaries``).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Dict, Iterator, List, Optional

from detectron2.utils import comm

from ..utils.atomic_files import temporary_writer_pid
from ..utils.user_errors import UserError

__all__ = ["LOCK_NAME", "RunLockError", "acquire_run_lock", "release_run_lock",
           "remove_stale_temporaries", "run_lock"]

LOCK_NAME = ".lock"
logger = logging.getLogger(__name__)

_held: Dict[str, int] = {}  # lock file path -> how many times this process holds it


class RunLockError(RuntimeError, UserError):
    """``OUTPUT_DIR`` is in use by another training."""


def _lock_path(output_dir: str) -> str:
    return os.path.join(os.path.realpath(output_dir), LOCK_NAME)


def _proc_stat(pid: int) -> Optional[list]:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot, None where unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive_here(owner: dict) -> bool:
    """Whether the lock's process (of this host) may still run: it exists, is no zombie, and
    -- where both are known -- started when the lock's process did (pids are reused)."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # exists, another user's
    fields = _proc_stat(pid)
    if fields is None:  # no /proc (or hidden): the process exists
        return True
    started = owner.get("started")
    return fields[0] != "Z" and (started is None or started == _start_time(pid))


def _read_owner(path: str, wait: float = 2.0) -> Optional[dict]:
    """The lock's content; None if the file is gone. A file just created by another process
    may be empty for a moment: read again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(text)
            if isinstance(owner, dict):
                return owner
        except ValueError:
            pass
        if time.monotonic() >= deadline:
            return {"unreadable": text[:200]}
        time.sleep(0.05)


def _describe(owner: dict) -> str:
    if "unreadable" in owner:
        return "an unknown process (the lock file cannot be read)"
    since = owner.get("time")
    since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" \
        if isinstance(since, (int, float)) else ""
    return f"pid {owner.get('pid')} on host {owner.get('host')}{since}"


def _remove_stale(path: str, owner: dict) -> None:
    """Remove the lock file if it still is the stale one read (a concurrent run may have taken
    it over since): move it aside atomically, look, and put back a fresh one moved by mistake."""
    aside = f"{path}.stale.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        if _read_owner(aside, wait=0) != owner:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        os.remove(aside)


def acquire_run_lock(output_dir: str, main_process_only: bool = True) -> bool:
    """Take ``output_dir``'s lock for this process (creating the folder), until
    :func:`release_run_lock` or the process's exit; whether this process holds it: a process
    that is not the main one does not take it (``main_process_only``). Raises
    :class:`RunLockError` naming the process and host that hold it."""
    if main_process_only and not comm.is_main_process():
        return False
    path = _lock_path(output_dir)
    if path in _held:
        _held[path] += 1
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "started": _start_time(os.getpid()),
            "time": time.time()}
    for _ in range(10):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is None:  # released meanwhile
                continue
            if "unreadable" in owner or owner.get("host") != host or _alive_here(owner):
                raise RunLockError(
                    f"OUTPUT_DIR '{os.path.dirname(path)}' is in use by another training: "
                    f"{_describe(owner)} holds {path}. Wait for it to end or choose another "
                    f"OUTPUT_DIR; if that run is over (killed, or its machine is down), "
                    f"delete {path}.") from None
            logger.warning(f"Taking over the lock {path} of {_describe(owner)}, which has "
                           f"ended.")
            _remove_stale(path, owner)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
            f.flush()
            os.fsync(f.fileno())
        _held[path] = 1
        return True
    raise RunLockError(f"could not take the lock {path}: other runs keep taking it")


def release_run_lock(output_dir: str) -> None:
    """Release one hold of ``output_dir``'s lock; the last removes the file. Does nothing
    where this process does not hold it."""
    path = _lock_path(output_dir)
    if path not in _held:
        return
    _held[path] -= 1
    if _held[path] > 0:
        return
    del _held[path]
    owner = _read_owner(path, wait=0)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def run_lock(output_dir: str, main_process_only: bool = True) -> Iterator[None]:
    """``with run_lock(cfg.OUTPUT_DIR): ...``: :func:`acquire_run_lock`, released at the end
    (also on an exception)."""
    acquire_run_lock(output_dir, main_process_only)
    try:
        yield
    finally:
        release_run_lock(output_dir)


def remove_stale_temporaries(output_dir: str) -> List[str]:
    """Remove the temporaries of ``atomic_write_bytes`` (``.tmp_<name>.<pid>.<hex>``) whose
    writer has ended, in ``output_dir`` itself (not below it); only for the lock's holder.
    Returns the removed paths (also logged)."""
    removed = []
    with os.scandir(output_dir) as entries:
        for entry in entries:
            pid = temporary_writer_pid(entry.name)
            if pid is not None and entry.is_file(follow_symlinks=False) \
                    and not _alive_here({"pid": pid}):
                os.remove(entry.path)
                removed.append(entry.path)
    if removed:
        logger.warning(f"Removed {len(removed)} partial file(s) an interrupted run left in "
                       f"{output_dir}: " + ", ".join(sorted(os.path.basename(p) for p in removed)))
    return sorted(removed)


@atexit.register  # also in the spawned workers of Detectron2's launch, which exit normally
def _release_all() -> None:
    for path in list(_held):
        _held[path] = 1
        release_run_lock(os.path.dirname(path))
