"""A ``DetectionCheckpointer`` whose files are written atomically.

A crash (or a full disk) while saving must never leave a truncated ``model_XXXX.pth`` or a
``last_checkpoint`` naming one: both are written to a temporary file in the same folder and
moved into place with ``os.replace``.

A weight file that is missing or unreadable (empty, truncated, not a checkpoint) is an error
naming the file and what pointed at it: ``MODEL.WEIGHTS`` (``weights_key``), or the run's
``last_checkpoint`` on ``--resume``.
"""
from __future__ import annotations

import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic_files import atomic_write_bytes

__all__ = ["AtomicCheckpointer"]


class AtomicCheckpointer(DetectionCheckpointer):
    def __init__(self, model, save_dir: str = "", *, weights_key: str = "MODEL.WEIGHTS",
                 **kwargs):
        """``weights_key``: what names the file given to ``load`` (for error messages)."""
        super().__init__(model, save_dir, **kwargs)
        self.weights_key = weights_key
        self._origin = weights_key

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

    def resume_or_load(self, path: str, *, resume: bool = True):
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        self._origin = f"named by {os.path.join(self.save_dir, 'last_checkpoint')}"
        try:
            return self.load(self.get_checkpoint_file())
        finally:
            self._origin = self.weights_key

    def load(self, path: str, *args, **kwargs):
        """Load ``path``; a local path that does not exist is a clear error, not an assert."""
        if path and "://" not in path and not os.path.isfile(path):
            hint = (f"Point {self.weights_key} at a checkpoint written by tools/train_net.py, "
                    f"or leave it empty to start from random initialisation."
                    if self._origin == self.weights_key else
                    "Write the name of an existing model_*.pth of the run into last_checkpoint, "
                    "or train without --resume.")
            raise FileNotFoundError(f"weight file '{path}' ({self._origin}) does not exist. "
                                    + hint)
        try:
            return super().load(path, *args, **kwargs)
        finally:  # Detectron2 resets it only on success; a failed load would block the next
            self._parsed_url_during_load = None

    def _load_file(self, filename: str):
        """An unreadable file (empty, truncated, not a checkpoint) is an error naming it and
        its key, not a pickle or zip traceback."""
        try:
            return super()._load_file(filename)
        except Exception as error:  # EOFError, UnpicklingError, zip RuntimeError, ...
            first = str(error).strip().split(". ", 1)[0].split("\n", 1)[0][:200]
            reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
            raise ValueError(
                f"weight file '{filename}' ({self._origin}) is not a readable checkpoint "
                f"({reason}; {os.path.getsize(filename)} bytes): it is empty, truncated or "
                f"not a checkpoint written by tools/train_net.py.") from None

    def missing_tensors(self, module) -> list:
        """The tensors of ``module`` (a part of the model) that the last ``load`` left as
        initialised: the file held no value for them."""
        missing = set(getattr(self, "_last_missing", ()))
        prefix = next((name + "." for name, m in self.model.named_modules() if m is module), "")
        return sorted(k for k in (prefix + key for key in module.state_dict()) if k in missing)

    def _log_incompatible_keys(self, incompatible) -> None:
        """Shape mismatches are an error (Detectron2 only warns and skips those tensors)."""
        self._last_missing = list(incompatible.missing_keys)
        if incompatible.incorrect_shapes:
            lines = [f"  {key}: checkpoint {tuple(src)} vs model {tuple(dst)}"
                     for key, src, dst in incompatible.incorrect_shapes]
            raise ValueError("checkpoint tensors do not fit the model (is the config the one "
                             "the checkpoint was trained with?):\n" + "\n".join(lines))
        super()._log_incompatible_keys(incompatible)
