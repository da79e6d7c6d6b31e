"""Run one function over many files on a process pool, with a tqdm progress bar."""
from __future__ import annotations

import multiprocessing
from typing import Callable, List, Sequence, TypeVar

import cv2
from tqdm import tqdm

__all__ = ["parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def parallel_map(fn: Callable[[T], R], items: Sequence[T], nproc: int, desc: str,
                 progress: bool = True) -> List[R]:
    """``[fn(x) for x in items]`` over ``nproc`` processes, with a progress bar (unordered).

    Workers are forked: call it from a process that has not run torch operations yet (as the
    prepare scripts do); forking after torch started its thread pools can hang the workers.
    """
    nproc = max(1, min(nproc, len(items)))
    bar = (lambda it: tqdm(it, total=len(items), desc=desc, unit="file")) if progress \
        else (lambda it: it)
    if nproc == 1:
        return list(bar(map(fn, items)))
    with multiprocessing.Pool(nproc, initializer=_init_worker) as pool:
        return list(bar(pool.imap_unordered(fn, items, chunksize=4)))
