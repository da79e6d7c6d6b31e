"""Encoder pretraining on the source domain only: the synthetic benchmark's stand-in for
ImageNet (issue 17). Supervised segmentation on source-style images and labels; the encoder is
kept, the head thrown away. No target image may enter: the loader refuses any training set
whose metadata does not say ``domain="source"``, and a config naming target data at all."""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from detectron2.data import MetadataCatalog

from ..data import build_supervised_train_loader
from .trainer import UDATrainer

__all__ = ["require_source_domain", "build_pretraining_loader", "PretrainingTrainer",
           "pretrained_backbone_state"]


def require_source_domain(dataset_names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every data set is registered with ``domain="source"``."""
    if not dataset_names:
        raise ValueError("pretraining needs a source-domain data set in DATASETS.TRAIN")
    for name in dataset_names:
        domain = getattr(MetadataCatalog.get(name), "domain", None)
        if domain != "source":
            raise ValueError(
                f"pretraining may read source-domain images only, but DATASETS.TRAIN names "
                f"{name!r} (domain={domain!r}): a pretrained encoder that has seen the target "
                f"would make the pretrained regime a partly supervised one. Use "
                f"synthetic_uda_source_pretrain (tools/pretrain_synthetic.py renders it).")


def build_pretraining_loader(cfg):
    """The supervised loader of ``DATASETS.TRAIN``, after checking that it is source-only."""
    if cfg.DATASETS.TARGET_TRAIN:
        raise ValueError(f"a pretraining config must not name target data; it has "
                         f"DATASETS.TARGET_TRAIN={tuple(cfg.DATASETS.TARGET_TRAIN)}")
    require_source_domain(list(cfg.DATASETS.TRAIN))
    return build_supervised_train_loader(cfg)


class PretrainingTrainer(UDATrainer):
    """``UDATrainer`` of a plain segmentor whose training data must be source-only."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_pretraining_loader(cfg)


def pretrained_backbone_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The encoder's state dict (``MODEL.BACKBONE.WEIGHTS`` keys) of a trained segmentor."""
    network = getattr(model, "network", None)
    if network is None:
        raise ValueError(f"{type(model).__name__} is not a single-network segmentor: pretrain "
                         f"with META_ARCHITECTURE UDASegmentor")
    return {k: v.detach().clone() for k, v in network.backbone.state_dict().items()}
