"""The command line every ``datasets/prepare_*.py`` script shares: ``--root`` and ``--nproc``,
one way of reporting a missing or malformed dataset (``error: ...``, exit status 2), and the
summary's note on damaged files a run wrote again."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence, Tuple, Type, TypeVar

__all__ = ["prepare_argument_parser", "run_prepare_cli", "replaced_note"]

T = TypeVar("T")


def prepare_argument_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the shared options; a script may add its own before parsing."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default=None,
                        help="dataset root; default: $DETECTRON2_DATASETS, else ./datasets")
    parser.add_argument("--nproc", type=int, default=os.cpu_count() or 1,
                        help="worker processes")
    return parser


def run_prepare_cli(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                    prepare: Callable[[argparse.Namespace], T],
                    summary: Callable[[argparse.Namespace, T], str],
                    errors: Tuple[Type[BaseException], ...]) -> int:
    """Parse ``argv``, run ``prepare(args)`` and print ``summary(args, result)``; returns the
    exit status: 0, or 2 after printing ``error: <message>`` for one of ``errors``."""
    args = parser.parse_args(argv)
    try:
        result = prepare(args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(args, result))
    return 0


def replaced_note(replaced: int) -> str:
    """`` (N empty or damaged files replaced)`` for a summary line, or "" when N is 0."""
    if not replaced:
        return ""
    return f" ({replaced} empty or damaged file{'' if replaced == 1 else 's'} replaced)"
