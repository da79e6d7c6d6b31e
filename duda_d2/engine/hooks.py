"""Training hooks: per-iteration seeding (exact resume) and TensorBoard debug panels."""
from __future__ import annotations

import random

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.visualizer import Visualizer

__all__ = ["SeedEachIterationHook", "DebugPanelHook"]


class SeedEachIterationHook(HookBase):
    """Seed torch, numpy and random from (seed, iteration, rank) before every step.

    The model's own random draws (dropout, drop-path, ClassMix classes, colour jitter, MIC
    masks) then depend on the iteration only, so a resumed run repeats them exactly.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        state = np.random.SeedSequence([self.seed, 3, self.trainer.iter, comm.get_rank()])
        value = int(state.generate_state(1)[0])
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class DebugPanelHook(HookBase):
    """Write the panels the model kept (source, target, labels, mix mask, prediction) to the
    event storage, which Detectron2's TensorBoard writer turns into images."""

    def __init__(self, dataset_name: str):
        self.metadata = MetadataCatalog.get(dataset_name)

    def _colour(self, image: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        canvas = image.permute(1, 2, 0).cpu().numpy()
        visual = Visualizer(canvas, self.metadata).draw_sem_seg(label.cpu().numpy(), alpha=0.6)
        return visual.get_image()

    def after_step(self):
        visuals = getattr(_unwrap(self.trainer.model), "debug_visuals", None)
        if not visuals or not comm.is_main_process():
            return
        storage = self.trainer.storage
        source, target = visuals["source"], visuals["target"]
        panels = {
            "source_label": self._colour(source, visuals["source_label"]),
            "target_pseudo_label": self._colour(target, visuals["pseudo_label"]),
            "mix_mask": self._colour(source, visuals["mix_mask"].long() * 13),
        }
        if "mix_prediction" in visuals:
            pred = torch.nn.functional.interpolate(
                visuals["mix_prediction"][None, None].float(), size=target.shape[-2:],
                mode="nearest")[0, 0].long()
            panels["mix_prediction"] = self._colour(target, pred)
        for name, array in panels.items():
            storage.put_image(f"debug/{name}", torch.from_numpy(array).permute(2, 0, 1) / 255.0)
        visuals.clear()
