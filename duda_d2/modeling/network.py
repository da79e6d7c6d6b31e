"""One segmentation network: a registered backbone followed by a registered head."""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

import safetensors.torch
import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.modeling import build_backbone, build_sem_seg_head

__all__ = ["SegmentationNetwork", "build_segmentation_network", "load_backbone_weights",
           "named_networks", "sub_network_config", "load_network_weights",
           "resolve_config_path", "read_checkpoint_keys", "checkpoint_networks",
           "checkpoint_contents"]

logger = logging.getLogger(__name__)


class SegmentationNetwork(nn.Module):
    """Backbone + head (+ an optional instance head) mapping normalised images (N, 3, H, W) to
    a dict of named low-resolution maps: ``{"sem_seg": logits}`` for a semantic head, plus the
    instance head's ``center`` and ``offset`` for bottom-up panoptic segmentation. What the maps
    mean is the task's business (``modeling/tasks``).

    Meta-architectures hold one of these per network (student, teacher, small student), so a
    network is a self-contained unit that can be copied, EMA-averaged or exported alone.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module,
                 instance_head: Optional[nn.Module] = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.instance_head = instance_head

    def forward(self, images: torch.Tensor, with_features: bool = False):
        """The named maps, or (maps, backbone features) from one pass for feature losses."""
        features = self.backbone(images)
        outputs = self.head(features)
        if not isinstance(outputs, dict):
            outputs = {"sem_seg": outputs}
        if self.instance_head is not None:
            outputs = {**outputs, **self.instance_head(features)}
        return (outputs, features) if with_features else outputs

    @property
    def size_divisibility(self) -> int:
        return getattr(self.backbone, "size_divisibility", 0)


def named_networks(model: nn.Module) -> List[Tuple[str, SegmentationNetwork]]:
    """The segmentation networks a meta-architecture holds (student, teacher, ...) by name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SegmentationNetwork)]


def build_segmentation_network(cfg: CfgNode) -> SegmentationNetwork:
    """Build the backbone named by ``MODEL.BACKBONE.NAME``, the head ``MODEL.SEM_SEG_HEAD.NAME``
    and, for ``MODEL.TASK "panoptic"``, the instance head ``MODEL.INS_EMBED_HEAD.NAME``."""
    from ..config import TASKS

    if cfg.MODEL.TASK not in TASKS:
        raise ValueError(f"MODEL.TASK={cfg.MODEL.TASK!r} unknown; use one of {list(TASKS)}")
    backbone = build_backbone(cfg)
    if cfg.MODEL.BACKBONE.WEIGHTS:
        load_backbone_weights(backbone, cfg.MODEL.BACKBONE.WEIGHTS)
    shapes = backbone.output_shape()
    instance_head = None
    if cfg.MODEL.TASK == "panoptic":
        from detectron2.projects.panoptic_deeplab import build_ins_embed_branch

        from . import heads  # noqa: F401  (registers the instance heads)

        instance_head = build_ins_embed_branch(cfg, shapes)
    return SegmentationNetwork(backbone, build_sem_seg_head(cfg, shapes), instance_head)


# Below this share of the backbone's tensors, a backbone weight file is the wrong file.
MIN_BACKBONE_MATCH = 0.9


def _read_weight_file(path: str, key: str) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # empty, truncated, not a torch file
        raise ValueError(f"weight file '{path}' ({key}) is not a readable checkpoint "
                         f"({type(error).__name__}; {os.path.getsize(path)} bytes): it is empty, "
                         f"truncated or not a file written by torch.save.") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"weight file '{path}' ({key}) holds a {type(checkpoint).__name__}, "
                         f"not a state dict")
    return checkpoint


def read_checkpoint_keys(path: str, key: str) -> List[str]:
    """The model keys of the weight file ``path`` (named by ``key`` in errors)."""
    checkpoint = _read_weight_file(path, key)
    return list(checkpoint.get("model", checkpoint))


def checkpoint_networks(keys) -> Dict[str, int]:
    """The networks a checkpoint's keys hold: the prefix of each ``<prefix>.backbone.*`` /
    ``<prefix>.head.*`` key (``network``, ``pair.student``, ``large_pair.teacher``, ...; ``""``
    for a bare network, which needs both) with its number of tensors."""
    counts: Dict[str, Dict[str, int]] = {}
    for k in keys:
        parts = k.split(".")
        i = next((i for i, p in enumerate(parts[:-1])
                  if p in ("backbone", "head", "instance_head")), None)
        if i is not None:
            part = counts.setdefault(".".join(parts[:i]),
                                     {"backbone": 0, "head": 0, "instance_head": 0})
            part[parts[i]] += 1
    return {p: sum(c.values()) for p, c in counts.items() if c["backbone"] and (p or c["head"])}


def checkpoint_contents(keys) -> str:
    """What a checkpoint holds, for messages: "the networks pair.student (192 tensors), ..."
    or "no network: N tensors with keys like [...]"."""
    networks = checkpoint_networks(keys)
    if not networks:
        return f"no network: {len(keys)} tensors with keys like {sorted(keys)[:3]}"
    return "the networks " + ", ".join(f"{p or '(bare network)'} ({n} tensors)"
                                       for p, n in sorted(networks.items()))


def load_backbone_weights(backbone: nn.Module, path: str) -> Tuple[List[str], List[str]]:
    """Load converted ImageNet weights into ``backbone``; return (missing, unexpected) keys.

    Every tensor must have the model's shape (a mismatch means a wrong variant: an error), and
    the file must hold at least 90 % of the backbone's tensors (else it is another kind of file:
    an error that says what it looks like); the number loaded is logged, missing and unexpected
    keys one per line.
    """
    key = "MODEL.BACKBONE.WEIGHTS"
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"backbone weight file '{path}' ({key}) does not exist. Convert the ImageNet "
            f"checkpoint the config's comment names (SegFormer mit_b*.pth, a torchvision / "
            f"mmcv ResNet, ...) with `.venv/bin/python tools/convert_pretrained.py INPUT {path}`; "
            f"README section 'ImageNet weights' says where to download each file.")
    if path.endswith(".safetensors"):  # e.g. a timm / Hugging Face hub file
        try:
            state = safetensors.torch.load_file(path, device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors' own error type
            raise ValueError(f"weight file '{path}' ({key}) is not a readable .safetensors file "
                             f"({type(error).__name__}: {error})") from None
    else:
        checkpoint = _read_weight_file(path, key)
        state = checkpoint.get("model", checkpoint)
    if hasattr(backbone, "load_timm_checkpoint") and not backbone.is_own_checkpoint(state):
        report = backbone.load_timm_checkpoint(path)  # timm's own loader, checked strictly
        logger.info(f"loaded timm checkpoint {path}:\n{report.summary()}")
        return [], []
    own = backbone.state_dict()
    wrong = [f"  {k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and hasattr(v, "shape")
             and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"backbone weights '{path}' do not fit the backbone (another variant?):"
                         "\n" + "\n".join(wrong))
    matched = sum(1 for k in own if k in state)
    if matched < MIN_BACKBONE_MATCH * len(own):
        raise ValueError(_backbone_mismatch_message(path, state, own, matched))
    result = backbone.load_state_dict(state, strict=False)
    for name in result.missing_keys:
        logger.warning(f"backbone weights '{path}': missing key {name} (left as initialised)")
    for name in result.unexpected_keys:
        logger.warning(f"backbone weights '{path}': unexpected key {name} (ignored)")
    logger.info(f"loaded {matched} of {len(own)} backbone tensors from {path}")
    return list(result.missing_keys), list(result.unexpected_keys)


def _backbone_mismatch_message(path: str, state: dict, own: dict, matched: int) -> str:
    """What a backbone weight file that does not fit looks like, and what to do."""
    head = (f"backbone weights '{path}' (MODEL.BACKBONE.WEIGHTS) match only {matched} of the "
            f"backbone's {len(own)} tensors.")
    networks = [p for p in checkpoint_networks(state) if p]
    if networks:
        return (f"{head} It looks like the checkpoint of a whole training run (networks "
                f"{', '.join(sorted(networks))}): load it with MODEL.WEIGHTS, and keep "
                f"MODEL.BACKBONE.WEIGHTS for ImageNet weights converted by "
                f"tools/convert_pretrained.py.")
    return (f"{head} Its keys look like {sorted(state)[:3]}, the backbone's like "
            f"{sorted(own)[:3]}: convert the file with tools/convert_pretrained.py, or check "
            f"that it is for MODEL.BACKBONE.NAME / the variant this config builds.")


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_config_path(path: str, key: str) -> str:
    """``path`` as given if it exists, else relative to the repository; a clear error else."""
    for candidate in (path, os.path.join(REPO_ROOT, path)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"config file '{path}' ({key}) not found, neither in the working "
                            f"directory nor in the repository '{REPO_ROOT}'")


def sub_network_config(cfg: CfgNode, config_file: str, opts, key: str) -> CfgNode:
    """``cfg`` with another network description merged in (for DUDA's large pair, extra
    teachers): the file's MODEL keys, then ``opts``.

    ``MODEL.BACKBONE.WEIGHTS`` is not inherited: the main network's ImageNet file is for its own
    backbone (a MiT-B0 file must not initialise a B5, nor a B0 large pair without saying so), so
    a sub-network's comes from its file or ``opts`` only.
    """
    sub = cfg.clone()
    sub.defrost()
    sub.MODEL.BACKBONE.WEIGHTS = ""
    sub.merge_from_file(resolve_config_path(config_file, key))
    sub.merge_from_list(list(opts))
    return sub


def load_network_weights(network: nn.Module, path: str, key: str) -> None:
    """Load a trained network from a train_net / export_student checkpoint (``network.*`` keys
    of the model, or a bare network state dict); every key and shape must match."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file '{path}' ({key}) does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("model", checkpoint)
    if any(k.startswith("network.") for k in state):
        state = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
    own = network.state_dict()
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        raise ValueError(f"'{path}' ({key}) does not fit the network its config builds: "
                         f"shape mismatches {wrong[:5]}, missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]} (first 5 of each)")
    network.load_state_dict(state)
