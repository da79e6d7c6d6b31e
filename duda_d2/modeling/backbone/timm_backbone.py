"""Any timm ``features_only`` model as a Detectron2 backbone, registered as ``build_timm_backbone``.

timm offers hundreds of ImageNet encoders (ResNets, EfficientNets, MobileNets, ConvNeXts, ...)
that can return a pyramid of feature maps. This module wraps one of them so that Detectron2 heads
(SegFormer, DAFormer, DeepLab, ...) can consume it like any other backbone: features are named by
their stride, the way Detectron2's ResNet names them.

Naming rules
------------
* A feature at stride ``2**k`` (k >= 0) is called ``f"res{k}"``: stride 2 -> ``res1``,
  4 -> ``res2``, 8 -> ``res3``, 16 -> ``res4``, 32 -> ``res5``.
* A feature whose stride is not a power of two (e.g. 14 for a patch-14 ViT) is called
  ``f"stride{s}"`` so that it can still be requested explicitly.
* When several features share a stride (plain ViTs give every block at stride 16; some CNNs
  report two taps at the same resolution), only the **last (deepest)** one is kept under that
  name: it is the most processed map at that resolution.
* Only the features timm enables by default for ``features_only`` are considered (for most CNNs
  every stage; for ViTs the last blocks).

Weights are never downloaded (``pretrained=False``). ``MODEL.BACKBONE.WEIGHTS`` takes either a
timm hub checkpoint the user downloaded (``model.safetensors`` / ``pytorch_model.bin``, loaded by
timm's local-file mechanism and checked strictly: :mod:`.timm_checkpoint`) or a file of this
backbone's own keys (``body.*``, e.g. written by ``tools/convert_pretrained.py --timm-model``).
"""
from __future__ import annotations

import difflib
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import timm
import torch
from torch import nn

from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

from .timm_checkpoint import TimmCheckpointReport, load_timm_features

__all__ = ["TimmBackbone", "build_timm_backbone", "stride_to_name"]

logger = logging.getLogger(__name__)

DEFAULT_OUT_FEATURES: Tuple[str, ...] = ("res2", "res3", "res4", "res5")


def stride_to_name(stride: int) -> str:
    """Detectron2-style name of a feature at ``stride`` (``res{log2 stride}``, else ``stride{s}``)."""
    stride = int(stride)
    if stride >= 1 and stride & (stride - 1) == 0:
        return f"res{int(math.log2(stride))}"
    return f"stride{stride}"


def _check_model_name(name: str) -> None:
    """Raise a readable ``ValueError`` when timm does not know ``name`` (instead of timm's raw error)."""
    if timm.is_model(name):
        return
    base = name.split(".", 1)[0]
    close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close matches: {close}." if close else ""
    raise ValueError(
        f"Unknown timm model {name!r}.{hint} List the available names with "
        f"timm.list_models('*{base[:6]}*') (only models supporting features_only can be used)."
    )


def _create(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, pretrained=False, **kwargs)`` with clear errors.

    ``TypeError`` (an unsupported keyword such as ``drop_path_rate``) is left for the caller.
    """
    try:
        return timm.create_model(name, features_only=True, pretrained=False, **kwargs)
    except TypeError:
        raise
    except (RuntimeError, AssertionError, AttributeError, KeyError, NotImplementedError) as e:
        # Architectures without a feature-extraction path fail in assorted ways inside timm.
        raise ValueError(f"timm model {name!r} could not be built with features_only=True "
                         f"({type(e).__name__}: {e})") from e


def _probe_features(name: str, in_chans: int) -> List[Tuple[int, int, int]]:
    """``(timm out index, stride, channels)`` of every default feature of ``name``.

    The probe is built on the ``meta`` device, which allocates no memory and skips the cost of
    initialising weights; models whose constructor needs real tensors fall back to the CPU.
    """
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, features_only=True, pretrained=False,
                                      in_chans=in_chans)
    except Exception:  # constructor does real tensor work (e.g. ``.item()``): retry on the CPU
        probe = _create(name, in_chans=in_chans)
    info = probe.feature_info
    return list(zip(info.out_indices, info.reduction(), info.channels()))


def _named_features(name: str, features: Sequence[Tuple[int, int, int]]
                    ) -> Dict[str, Tuple[int, int, int]]:
    """Map each stride name to ``(out index, stride, channels)``, keeping the last of equal strides."""
    named: Dict[str, Tuple[int, int, int]] = {}
    for index, stride, channels in features:
        key = stride_to_name(stride)
        if key in named:
            logger.debug("timm model %s: feature %d replaces feature %d as %s (same stride %d)",
                         name, index, named[key][0], key, stride)
        named[key] = (index, stride, channels)
    return named


class TimmBackbone(Backbone):
    """A timm ``features_only`` model whose feature maps are named by stride (``res2`` ... ``res5``).

    Args:
        model_name: any timm model name that supports ``features_only`` (optionally with a
            ``.tag``, which only selects the pretrained config; weights are never downloaded).
        out_features: names of the feature maps to return (see the module docstring).
        in_chans: number of input channels.
        drop_path_rate: stochastic depth rate, passed only to models that accept it.
    """

    def __init__(self, model_name: str, out_features: Sequence[str] = DEFAULT_OUT_FEATURES,
                 in_chans: int = 3, drop_path_rate: float = 0.0):
        super().__init__()
        _check_model_name(model_name)
        self.model_name = model_name
        available = _named_features(model_name, _probe_features(model_name, in_chans))

        requested = list(dict.fromkeys(out_features))  # de-duplicate, keep order
        if not requested:
            raise ValueError(f"TimmBackbone({model_name!r}): out_features is empty")
        missing = [f for f in requested if f not in available]
        if missing:
            have = ", ".join(f"{k} (stride {s}, {c} ch)" for k, (_, s, c) in available.items())
            raise ValueError(
                f"timm model {model_name!r} does not give feature(s) {missing}: asked for "
                f"{requested}, it has {have}")

        # Build only up to the deepest requested feature (timm prunes later stages itself).
        selected = sorted(requested, key=lambda f: available[f][0])
        out_indices = tuple(available[f][0] for f in selected)
        self.body = self._build(model_name, out_indices, in_chans, drop_path_rate)
        self._out_indices, self._in_chans = out_indices, in_chans

        info = self.body.feature_info
        strides, channels = info.reduction(), info.channels()
        expected = [available[f][1] for f in selected]
        if list(strides) != expected:  # should not happen; guards against timm quirks
            raise RuntimeError(f"timm model {model_name!r} with out_indices={out_indices} gives "
                               f"strides {strides}, expected {expected}")
        self._out_features = selected
        self._out_feature_strides = dict(zip(selected, (int(s) for s in strides)))
        self._out_feature_channels = dict(zip(selected, (int(c) for c in channels)))
        # Some timm feature models (e.g. Swin) return channels-last maps; Detectron2 wants NCHW.
        self._channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    @staticmethod
    def _build(name: str, out_indices: Tuple[int, ...], in_chans: int,
               drop_path_rate: float) -> nn.Module:
        """Create the real model, passing ``drop_path_rate`` only where the model accepts it."""
        kwargs = dict(out_indices=out_indices, in_chans=in_chans)
        if drop_path_rate <= 0:
            return _create(name, **kwargs)
        try:
            return _create(name, drop_path_rate=drop_path_rate, **kwargs)
        except TypeError as e:
            if "drop_path_rate" not in str(e):
                raise
            logger.warning("timm model %s has no stochastic depth; ignoring drop_path_rate=%s",
                           name, drop_path_rate)
            return _create(name, **kwargs)

    def is_own_checkpoint(self, state: Dict[str, torch.Tensor]) -> bool:
        """Whether ``state`` already has this backbone's keys (``body.*``) rather than timm's."""
        return bool(state) and all(k.startswith("body.") for k in state)

    def load_timm_checkpoint(self, path: str) -> TimmCheckpointReport:
        """Load the timm hub checkpoint ``path`` (timm's keys) into the body, strictly."""
        body, report = load_timm_features(self.model_name, path, out_indices=self._out_indices,
                                          in_chans=self._in_chans)
        self.body.load_state_dict(body.state_dict(), strict=True)
        return report

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Feature maps ``{name: (N, C, H / stride, W / stride)}`` for the selected out features."""
        if x.dim() != 4:
            raise ValueError(f"TimmBackbone takes (N, C, H, W) inputs, got shape {tuple(x.shape)}")
        outputs = self.body(x)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        features = {}
        for name, y in zip(self._out_features, outputs):
            if self._channels_last:
                y = y.permute(0, 3, 1, 2).contiguous()
            features[name] = y
        return features

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n],
                             stride=self._out_feature_strides[n]) for n in self._out_features}

    @property
    def size_divisibility(self) -> int:
        """Inputs padded to a multiple of the largest stride give exact ``H / stride`` maps."""
        return max(self._out_feature_strides.values())


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """Build the timm model ``MODEL.TIMM.NAME`` returning ``MODEL.TIMM.OUT_FEATURES``."""
    timm_cfg = cfg.MODEL.TIMM
    in_chans: Optional[int] = input_shape.channels
    return TimmBackbone(
        timm_cfg.NAME,
        out_features=timm_cfg.get("OUT_FEATURES", list(DEFAULT_OUT_FEATURES)),
        in_chans=in_chans if in_chans is not None else 3,
        drop_path_rate=float(timm_cfg.get("DROP_PATH_RATE", 0.0)),
    )
