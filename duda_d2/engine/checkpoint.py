"""A ``DetectionCheckpointer`` whose files are written atomically.

A crash (or a full disk) while saving must never leave a truncated ``model_XXXX.pth`` or a
``last_checkpoint`` naming one: both are written to a temporary file in the same folder and
moved into place with ``os.replace``.
"""
from __future__ import annotations

import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["AtomicCheckpointer"]


class AtomicCheckpointer(DetectionCheckpointer):
    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        self.logger.info(f"Saving checkpoint to {os.path.join(self.save_dir, basename)}")
        atomic_write_bytes(os.path.join(self.save_dir, basename), lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"),
                           lambda f: f.write(last_filename_basename.encode()))

    def load(self, path: str, *args, **kwargs):
        """Load ``path``; a local path that does not exist is a clear error, not an assert."""
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(
                f"weight file '{path}' (MODEL.WEIGHTS) does not exist. Point MODEL.WEIGHTS at a "
                f"checkpoint written by tools/train_net.py, or leave it empty to start from "
                f"random initialisation.")
        return super().load(path, *args, **kwargs)

    def _log_incompatible_keys(self, incompatible) -> None:
        """Shape mismatches are an error (Detectron2 only warns and skips those tensors)."""
        if incompatible.incorrect_shapes:
            lines = [f"  {key}: checkpoint {tuple(src)} vs model {tuple(dst)}"
                     for key, src, dst in incompatible.incorrect_shapes]
            raise ValueError("checkpoint tensors do not fit the model (is the config the one "
                             "the checkpoint was trained with?):\n" + "\n".join(lines))
        super()._log_incompatible_keys(incompatible)
