"""Loading checkpoints written before a module was renamed (a ``load_state_dict`` pre-hook)."""
from __future__ import annotations

from typing import Callable, Dict

import torch

__all__ = ["rename_old_keys", "key_renamer"]


def rename_old_keys(state_dict: Dict[str, torch.Tensor], prefix: str,
                    renames: Dict[str, str]) -> None:
    """Rename, in place, keys ``prefix + old...`` to ``prefix + new...``."""
    for key in list(state_dict):
        for old, new in renames.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                break


def key_renamer(renames: Dict[str, str]) -> Callable:
    """A pre-hook for ``nn.Module._register_load_state_dict_pre_hook`` that upgrades old keys,
    so every loader (Detectron2's checkpointer, ``load_state_dict``) reads old checkpoints."""

    def hook(state_dict, prefix, *args) -> None:
        rename_old_keys(state_dict, prefix, renames)

    return hook
