"""Import DAFormer networks (MiT encoder + DAFormer head) from mmseg checkpoints.

DAFormer (Hoyer et al., CVPR 2022) and the code built on it (HRDA, MIC) release their trained
models as mmcv/mmseg checkpoints: ``{"meta": ..., "state_dict": ..., "optimizer": ...}``. The
state dict holds either

* a plain mmseg ``EncoderDecoder``: ``backbone.*``, ``decode_head.*`` (and, in some configs,
  ``auxiliary_head.*``, used for deep supervision in training only), or
* a whole UDA wrapper (``DACS``, the one DAFormer trains with): the adapted network
  ``model.backbone.*`` / ``model.decode_head.*``, its EMA teacher ``ema_model.*``, the frozen
  ImageNet model of the feature-distance loss ``imnet_model.*`` and, with MIC, the masking
  module ``mic.*`` (which holds its own EMA teacher only in some configurations).

``convert_mmseg_daformer`` turns one of these networks into this project's
``SegmentationNetwork`` keys (``backbone.*`` = ``MixVisionTransformer``, ``head.*`` =
``DAFormerHead``). ``which`` picks the network of a UDA checkpoint: ``model`` (the adapted
student), ``ema_model`` (its EMA teacher) or ``auto``: the only network of a plain checkpoint,
else ``model``, because ``model`` is the network DAFormer evaluates and reports: its
``tools/test.py`` strips ``model.`` from the keys and loads the result into an EncoderDecoder,
so the ``ema_model`` keys are left over and ignored there.

Key mapping (source keys relative to the selected network; ``{i}`` a level, ``{k}`` an ASPP
branch, ``ConvModule X`` meaning ``X.conv.weight`` -> ``Y.0.weight`` and ``X.bn.<p>`` ->
``Y.1.<p>`` for ``p`` in weight, bias, running_mean, running_var, num_batches_tracked)::

    backbone.<MiT key>                        backbone.<key>   (mit_convert: official SegFormer
                                              layout; mlp.dwconv.dwconv.* -> mlp.dwconv.*)
    decode_head.embed_layers.{i}.proj.*       head.embed.linear_c.{i}.*   (Linear; levels are
                                              concatenated fine first, in_index 0..3)
    fusion "aspp_dw" (DAFormer, config daformer_sepaspp_mitb5: separable ASPP, no pooling):
      ConvModule decode_head.fuse_layer.aspp_modules.{k}                  (dilation 1, 1x1)
                                              head.fuse.branches.{k}
      ConvModule decode_head.fuse_layer.aspp_modules.{k}.depthwise_conv   (dilation > 1)
                                              head.fuse.branches.{k}.0
      ConvModule decode_head.fuse_layer.aspp_modules.{k}.pointwise_conv
                                              head.fuse.branches.{k}.1
      ConvModule decode_head.fuse_layer.bottleneck (3x3)
                                              head.fuse.bottleneck
    fusion "aspp" (daformer_aspp_mitb5: plain ASPP, no pooling):
      ConvModule decode_head.fuse_layer.aspp_modules.{k}  head.fuse.branches.{k}
      ConvModule decode_head.fuse_layer.bottleneck        head.fuse.bottleneck
    fusion "conv1x1" (daformer_conv1_mitb5, "SegFormer with C_e=256"):
      ConvModule decode_head.fuse_layer                   head.fuse
    decode_head.conv_seg.*                    head.linear_pred.*  (after Dropout2d(0.1))
    auxiliary_head.*                          dropped (training-only deep supervision)

The MiT variant (b0 ... b5), ``EMBED_DIM``, ``NUM_CLASSES`` and ``FUSION`` are read from the
tensors. The ASPP dilations are not stored in any weight (a dilated 3x3 kernel has the same
shape for every dilation): they are an argument, defaulting to DAFormer's (1, 6, 12, 18), and
only their number and which branch is the 1x1 one are checked against the weights.

Refused, with a message: HRDA / MIC multi-resolution checkpoints (``decode_head.head.*`` and
``decode_head.scale_attention.*`` of an ``HRDAHead``, or a ``meta["config"]`` naming
``HRDAEncoderDecoder``/``HRDAHead``: ``check_release_meta``); MIC trained on a plain DAFormer
network is single-resolution, a DAFormer network, and is accepted; mmseg ``SegFormerHead`` checkpoints
(``decode_head.linear_fuse.*``; the Hugging Face import handles SegFormer), non-MiT backbones,
necks, image pooling / context layers in the ASPP, ISA fusion and other embedding layers.

Licences: the DAFormer / HRDA / MIC releases are the DAFormer authors' work under their licence
(see https://github.com/lhoyer/DAFormer); the MiT encoder weights inside them derive from
NVIDIA's SegFormer weights, under NVIDIA's non-commercial SegFormer licence. Converting does not
change either.

Using the result (``tools/convert_model.py from-mmseg CHECKPOINT OUTPUT_DIR`` writes
``OUTPUT_DIR/model.pth`` and ``OUTPUT_DIR/model.yaml``):

* as an extra frozen teacher of DUDA:
  ``MODEL.DUDA.EXTRA_TEACHER_CONFIGS [OUTPUT_DIR/model.yaml]``
  ``MODEL.DUDA.EXTRA_TEACHER_WEIGHTS [OUTPUT_DIR/model.pth]`` (plus a loss weight in
  ``MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS``);
* to initialise DUDA's large pair: ``MODEL.DUDA.LARGE_NETWORK_WEIGHTS OUTPUT_DIR/model.pth``
  (with ``MODEL.DUDA.LARGE_NETWORK_OPTS`` set to the file's ``network_opts`` where the
  checkpoint differs from configs/networks/mit_b5_daformer.yaml, e.g. in NUM_CLASSES);
* alone, e.g. to evaluate it: ``model.yaml`` is a ``UDASegmentor`` config whose
  ``MODEL.WEIGHTS`` is ``model.pth``.

The file holds ``{"model": {"network.<key>": tensor}, "source": ..., "__author__":
"duda_d2.convert_model", "network_opts": [KEY, VALUE, ...], "info": {...}}`` (written by
``tools/convert_model.py``'s ``write_converted_network``, as every conversion's).
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..backbone.mit_convert import ConversionReport, unwrap_state_dict

__all__ = [
    "DEFAULT_ASPP_DILATIONS",
    "MMSegConversionReport",
    "convert_mmseg_daformer",
    "load_mmseg_checkpoint",
    "check_release_meta",
    "meta_class_names",
    "network_config_opts",
    "add_from_mmseg_arguments",
    "LICENCE_NOTE",
    "HRDA_MESSAGE",
]

# DAFormer's ASPP dilations (configs/_base_/models/daformer_sepaspp_mitb5.py).
DEFAULT_ASPP_DILATIONS = (1, 6, 12, 18)
WHICH = ("auto", "model", "ema_model")
IN_FEATURES = ("res2", "res3", "res4", "res5")

LICENCE_NOTE = ("licence: DAFormer/HRDA/MIC releases are their authors' work under their "
                "licence (https://github.com/lhoyer/DAFormer); the MiT encoder weights in them "
                "derive from NVIDIA's SegFormer weights (NVIDIA Source Code License for "
                "SegFormer, non-commercial). Both travel with the converted weights.")
HRDA_MESSAGE = ("HRDA/MIC multi-resolution models with a scale-attention head are not supported "
                "until duda_d2 has HRDA; use a DAFormer (single-resolution) checkpoint")
SEGFORMER_MESSAGE = ("this is an mmseg SegFormerHead checkpoint (decode_head.linear_c.*, "
                     "linear_fuse.*, linear_pred.*), not a DAFormer head; SegFormer models are "
                     "imported by the Hugging Face import (duda_d2.modeling.interchange."
                     "huggingface_segformer, tools/convert_model.py)")

# Networks of a UDA wrapper that are never converted, with why.
_WRAPPER_DROPS = {
    "imnet_model.": "frozen ImageNet model of DAFormer's feature-distance loss (imnet_model)",
    "mic.": "MIC's masking-consistency module (its own EMA teacher, if any)",
}
_NETWORK_DROPS = {
    "auxiliary_head.": "auxiliary head (deep supervision in training only; not part of the "
                       "evaluated network)",
}
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CONV_MODULE_RE = re.compile(r"^(?P<module>.+)\.(?:(?P<conv>conv)\.weight|bn\.(?P<bn>"
                             + "|".join(_BN_PARAMS) + r"))$")
_EMBED_RE = re.compile(r"^embed_layers\.(\d+)\.proj\.(weight|bias)$")
_CONV_SEG_RE = re.compile(r"^conv_seg\.(weight|bias)$")
_ASPP_RE = re.compile(r"^fuse_layer\.aspp_modules\.(\d+)(?:\.(depthwise_conv|pointwise_conv))?$")
_HRDA_RE = re.compile(r"(^|\.)decode_head\.(scale_attention|head)\.")
_SEGFORMER_RE = re.compile(r"(^|\.)decode_head\.(linear_fuse|linear_c|linear_pred)\.")


@dataclass
class MMSegConversionReport(ConversionReport):
    """``mit_convert.ConversionReport`` over a whole DAFormer network (backbone and head):
    ``source_format`` is the checkpoint's layout, ``which`` the network converted."""

    which: str = "?"

    @property
    def source_layout(self) -> str:
        return self.source_format

    def expecting(self) -> str:
        return "the converted network"

    def summary(self) -> str:
        """ConversionReport's account, headed by the layout and the network converted."""
        lines = super().summary().splitlines()
        lines[0] = (f"source layout: {self.source_format}, network: {self.which}, "
                    f"variant: MiT-{self.variant}, {self.num_source} source tensors")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading


def load_mmseg_checkpoint(path: str, trust_pickle: bool = False
                          ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(flat state dict, ``meta``) of an mmcv checkpoint file ``{"meta": ..., "state_dict":
    ...}`` (``meta`` {} for a bare state dict). Read with torch's safe loader unless
    ``trust_pickle`` (files you trust only: unpickling can run code)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise ValueError(f"'{path}' holds objects torch's safe loader refuses ({e}); if you "
                         f"trust the file, pass --trust-pickle to read it anyway") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"could not read '{path}' as a torch checkpoint: {e}") from None
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    return _state_dict_of(obj, f"'{path}'"), dict(meta) if isinstance(meta, Mapping) else {}


def check_release_meta(meta: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose mmcv ``meta["config"]`` (the training config's text, which
    mmseg stores) describes an HRDA model -- also when its tensors would look like DAFormer's.
    MIC trained on a plain DAFormer network (single resolution) is a DAFormer network and is
    accepted."""
    config = meta.get("config")
    if isinstance(config, str) and re.search(r"HRDA(EncoderDecoder|Head)", config):
        raise ValueError(HRDA_MESSAGE + " (its meta config names HRDAEncoderDecoder/HRDAHead)")


def meta_class_names(meta: Mapping[str, Any]) -> Optional[List[str]]:
    """The class names mmseg stores in ``meta["CLASSES"]``, if any."""
    classes = meta.get("CLASSES")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _state_dict_of(obj: Any, name: str) -> Dict[str, Any]:
    state = unwrap_state_dict(obj, name)
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ----------------------------------------------------------------------------- layout


def _select_network(keys: Sequence[str], which: str) -> Tuple[str, str, str]:
    """(layout, chosen network name, its key prefix) of a plain or UDA-wrapped state dict."""
    if which not in WHICH:
        raise ValueError(f"which={which!r} unknown; use one of {WHICH}")
    plain = any(k.startswith(("backbone.", "decode_head.")) for k in keys)
    wrapped = {n for n in ("model", "ema_model") if any(k.startswith(f"{n}.backbone.")
                                                        for k in keys)}
    if plain and wrapped:
        raise ValueError("the checkpoint mixes a plain EncoderDecoder (backbone.*, "
                         "decode_head.*) and a UDA wrapper (model.*, ema_model.*): cannot tell "
                         "which network to convert")
    if plain:
        if which == "ema_model":
            raise ValueError("the checkpoint holds a single network (a plain EncoderDecoder: "
                             "backbone.*, decode_head.*), not a UDA wrapper with an EMA teacher; "
                             "use --which model (or auto)")
        return "EncoderDecoder", "model", ""
    if not wrapped:
        sample = ", ".join(sorted(keys)[:5]) or "(no keys)"
        raise ValueError("not an mmseg segmentor checkpoint: expected backbone.* and "
                         "decode_head.* keys, or a DAFormer UDA wrapper's model.backbone.* ... "
                         f"(found {sample})")
    chosen = "model" if which == "auto" else which
    if chosen not in wrapped:
        raise ValueError(f"the UDA checkpoint has no '{chosen}' network (it has "
                         f"{sorted(wrapped)}); pick another with --which")
    return "UDA wrapper (DACS)", chosen, chosen + "."


# ----------------------------------------------------------------------------- head


def _conv_module_target(module: str, info: "_HeadStructure") -> Optional[str]:
    """Our module path for a reference ConvModule path (relative to decode_head), or None."""
    if module == "fuse_layer" and info.fusion == "conv1x1":
        return "fuse"
    if module == "fuse_layer.bottleneck" and info.fusion != "conv1x1":
        return "fuse.bottleneck"
    m = _ASPP_RE.match(module)
    if m is None or info.fusion == "conv1x1":
        return None
    k, part = int(m.group(1)), m.group(2)
    if part is None:
        return f"fuse.branches.{k}"
    if info.fusion != "aspp_dw":
        return None
    return f"fuse.branches.{k}.{0 if part == 'depthwise_conv' else 1}"


@dataclass
class _HeadStructure:
    fusion: str
    embed_dim: int
    num_classes: int
    levels: List[int]
    branches: List[bool]  # per ASPP branch: is it the 1x1 (dilation 1) one


def _head_structure(head: Mapping[str, Any], dilations: Sequence[int]) -> _HeadStructure:
    """Read fusion, widths and branch layout of a DAFormer head from its (relative) keys;
    refuse the structures our DAFormerHead does not have."""
    keys = list(head)
    refused = {
        "fuse_layer.image_pool.": "the ASPP has image pooling (pool=True); DAFormer's configs "
                                  "and this project's DAFormerHead have none",
        "fuse_layer.context_layer.": "the ASPP has a context layer (context_cfg), which this "
                                     "project's DAFormerHead does not have",
        "fuse_layer.isa_layer.": "ISA fusion (daformer_isa_mitb5) is not supported by this "
                                 "project's DAFormerHead (fusions: aspp_dw, aspp, conv1x1)",
    }
    for prefix, why in refused.items():
        if any(k.startswith(prefix) for k in keys):
            raise ValueError(f"unsupported DAFormer head: {why}")
    other_embed = sorted({k for k in keys if k.startswith("embed_layers.")
                          and not _EMBED_RE.match(k)})
    if other_embed:
        raise ValueError("unsupported DAFormer head: its embedding layers are not the linear "
                         f"'mlp' embedding (keys like {other_embed[:3]}; e.g. "
                         "daformer_sepaspp_bottleneck_mitb5's rawconv_and_aspp); only "
                         "embed_layers.{i}.proj is supported")

    embed = {int(m.group(1)): head[k] for k in keys for m in [_EMBED_RE.match(k)]
             if m and m.group(2) == "weight"}
    if not embed:
        raise ValueError("the decode head has no embed_layers.{i}.proj.weight: not a DAFormer "
                         f"head (keys like {sorted(keys)[:4]})")
    levels = sorted(embed)
    if levels != [0, 1, 2, 3]:
        raise ValueError(f"the DAFormer head embeds backbone levels {levels}; this project's "
                         f"DAFormerHead uses all four (in_index [0, 1, 2, 3])")
    widths = {int(embed[i].shape[0]) for i in levels}
    if len(widths) != 1:
        raise ValueError(f"the DAFormer head embeds the levels to different widths "
                         f"{[int(embed[i].shape[0]) for i in levels]}; this project's "
                         f"DAFormerHead has one EMBED_DIM")
    embed_dim = widths.pop()
    seg = head.get("conv_seg.weight")
    if seg is None or seg.dim() != 4:
        raise ValueError("the decode head has no 1x1 classifier conv_seg.weight")
    num_classes, channels = int(seg.shape[0]), int(seg.shape[1])
    if channels != embed_dim:
        raise ValueError(f"the DAFormer head fuses to {channels} channels but embeds to "
                         f"{embed_dim}; this project's DAFormerHead uses EMBED_DIM for both")

    aspp: Dict[int, bool] = {}  # branch -> is it a 1x1 (dilation 1) ConvModule
    for k in keys:
        m = _CONV_MODULE_RE.match(k)
        a = _ASPP_RE.match(m.group("module")) if m else None
        if a is None:
            continue
        dilated = a.group(2) is not None or bool(
            m.group("conv") and head[k].dim() == 4 and head[k].shape[-1] != 1)
        aspp[int(a.group(1))] = aspp.get(int(a.group(1)), True) and not dilated
    if aspp:
        fusion = "aspp_dw" if any(".depthwise_conv." in k for k in keys) else "aspp"
        n = max(aspp) + 1
        branches = [aspp.get(i, True) for i in range(n)]
        if n != len(dilations):
            raise ValueError(f"the checkpoint's ASPP has {n} branches but {len(dilations)} "
                             f"dilations {list(dilations)} were given (--aspp-dilations)")
        for i, (is_1x1, d) in enumerate(zip(branches, dilations)):
            if is_1x1 != (int(d) == 1):
                kind = "a 1x1 conv (dilation 1)" if is_1x1 else "a dilated 3x3 conv"
                raise ValueError(f"ASPP branch {i} of the checkpoint is {kind}, but the given "
                                 f"dilation is {d} (--aspp-dilations {list(dilations)}): give "
                                 f"1 exactly for the 1x1 branches")
    elif "fuse_layer.conv.weight" in head:
        kernel = tuple(head["fuse_layer.conv.weight"].shape[-2:])
        if kernel != (1, 1):
            raise ValueError(f"the DAFormer head fuses with a {kernel[0]}x{kernel[1]} conv; this "
                             f"project's conv fusion (conv1x1) is 1x1 only")
        fusion, branches = "conv1x1", []
    else:
        fuse = sorted(k for k in keys if k.startswith("fuse_layer."))
        raise ValueError("unsupported DAFormer fusion layer (keys like "
                         f"{fuse[:3] or ['(none)']}); supported: separable ASPP, ASPP, 1x1 conv")
    return _HeadStructure(fusion, embed_dim, num_classes, levels, branches)


def _map_head_key(key: str, info: _HeadStructure) -> Optional[str]:
    """Our ``head.*`` key for a reference ``decode_head`` key (relative), or None."""
    m = _EMBED_RE.match(key)
    if m:
        return f"head.embed.linear_c.{info.levels.index(int(m.group(1)))}.{m.group(2)}"
    m = _CONV_SEG_RE.match(key)
    if m:
        return f"head.linear_pred.{m.group(1)}"
    m = _CONV_MODULE_RE.match(key)
    if m:
        target = _conv_module_target(m.group("module"), info)
        if target is not None:
            return (f"head.{target}.0.weight" if m.group("conv")
                    else f"head.{target}.1.{m.group('bn')}")
    return None


# ----------------------------------------------------------------------------- target


def _target_shapes(variant: str, head: _HeadStructure, dilations: Sequence[int]
                   ) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of our SegmentationNetwork (MiT ``variant`` + DAFormerHead) built on the
    meta device (no memory, no initialisation)."""
    from detectron2.layers import ShapeSpec

    from ..backbone.mit import MIT_SPECS
    from ..backbone.mit_convert import target_shapes
    from ..heads.daformer import DAFormerHead

    shapes = {f"backbone.{k}": v for k, v in target_shapes(variant).items()}
    dims = MIT_SPECS[variant].embed_dims
    input_shape = {n: ShapeSpec(channels=c, stride=s)
                   for n, c, s in zip(IN_FEATURES, dims, (4, 8, 16, 32))}
    with torch.device("meta"):
        module = DAFormerHead(input_shape=input_shape, in_features=list(IN_FEATURES),
                              num_classes=head.num_classes, embed_dim=head.embed_dim,
                              fusion=head.fusion, aspp_dilations=list(dilations))
    shapes.update((f"head.{k}", tuple(v.shape)) for k, v in module.state_dict().items())
    return shapes


# ----------------------------------------------------------------------------- convert


def _quoted_with_prefix(text: str, prefix: str) -> str:
    """``text`` with ``prefix`` put before every quoted key (mit_convert names sources so)."""
    return re.sub(r"'([^']+)'", lambda m: f"'{prefix}{m.group(1)}'", text)


def convert_mmseg_daformer(state_dict: Mapping[str, Any], which: str = "auto",
                           aspp_dilations: Sequence[int] = DEFAULT_ASPP_DILATIONS
                           ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any],
                                      MMSegConversionReport]:
    """Convert a DAFormer mmseg state dict (or the whole mmcv checkpoint holding it) into
    this project's ``SegmentationNetwork`` keys (``backbone.*``, ``head.*``).

    ``which``: ``"model"`` (the adapted network of a UDA checkpoint: the one DAFormer
    evaluates), ``"ema_model"`` (its EMA teacher) or ``"auto"`` (the plain EncoderDecoder's
    network, else ``model``). ``aspp_dilations`` cannot be read from the weights (DAFormer's
    default (1, 6, 12, 18)); their number and 1x1 branch are checked.

    Returns (network state, info, report). ``info`` holds what a config needs (``variant``,
    ``head``, ``embed_dim``, ``fusion``, ``aspp_dilations``, ``num_classes``) and what was
    converted (``which``, ``source_layout``). The state holds only tensors whose key and shape
    match the target network; ``report.ok`` is False when anything else is left (see
    ``report.problems()``). Raises ValueError for checkpoints of another structure (HRDA/MIC
    multi-resolution, SegFormer head, non-MiT backbone, unsupported DAFormer head variants).
    """
    from ..backbone.mit_convert import convert_state_dict

    state = _state_dict_of(state_dict, "the checkpoint")
    keys = list(state)
    if any(_HRDA_RE.search(k) for k in keys):
        raise ValueError(HRDA_MESSAGE)
    if any(_SEGFORMER_RE.search(k) for k in keys):
        raise ValueError(SEGFORMER_MESSAGE)
    dilations = [int(d) for d in aspp_dilations]
    if not dilations or any(d < 1 for d in dilations):
        raise ValueError(f"ASPP dilations must be positive integers, got {list(aspp_dilations)}")

    layout, chosen, prefix = _select_network(keys, which)
    report = MMSegConversionReport(source_format=layout, variant="?", which=chosen,
                                   num_source=len(state))
    backbone: Dict[str, Any] = {}
    head: Dict[str, Any] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            other = next((p for p in (*_WRAPPER_DROPS, "model.", "ema_model.")
                          if key.startswith(p)), None)
            if other in _WRAPPER_DROPS:
                report.dropped.append((key, _WRAPPER_DROPS[other]))
            elif other is not None:
                report.dropped.append((key, f"the {other[:-1]} network (not selected; "
                                            f"converting '{chosen}')"))
            else:
                report.unmatched_source.append((key, "not part of a DAFormer UDA checkpoint"))
            continue
        rel = key[len(prefix):]
        if not isinstance(value, torch.Tensor):
            report.unmatched_source.append((key, f"holds a {type(value).__name__}, "
                                                 f"not a tensor"))
        elif rel.startswith("backbone."):
            backbone[rel[len("backbone."):]] = value
        elif rel.startswith("decode_head."):
            head[rel[len("decode_head."):]] = value
        elif rel.startswith("neck."):
            raise ValueError(f"the network has a neck ('{key}', e.g. daformer_sepaspp_"
                             f"bottleneck_mitb5); this project's networks have none")
        elif any(rel.startswith(p) for p in _NETWORK_DROPS):
            report.dropped.append((key, next(w for p, w in _NETWORK_DROPS.items()
                                             if rel.startswith(p))))
        else:
            report.unmatched_source.append((key, "not a backbone or decode_head key"))
    if not backbone or not head:
        raise ValueError(f"the '{chosen}' network lacks {'backbone' if not backbone else ''}"
                         f"{' and ' if not backbone and not head else ''}"
                         f"{'decode_head' if not head else ''} tensors ({prefix}backbone.*, "
                         f"{prefix}decode_head.*)")

    # Backbone: mit_convert (official SegFormer layout), its account merged into ours.
    try:
        converted_bb, bb_report = convert_state_dict(backbone)
    except ValueError as e:
        raise ValueError(f"the backbone is not a MiT (SegFormer encoder) that this project "
                         f"knows: {e}") from None
    src = f"{prefix}backbone."
    report.variant = variant = bb_report.variant
    report.dropped += [(src + k, why) for k, why in bb_report.dropped]
    report.unmatched_source += [(src + k, why) for k, why in bb_report.unmatched_source]
    report.shape_mismatches += [(f"backbone.{t}", _quoted_with_prefix(s, src), got, want)
                                for t, s, got, want in bb_report.shape_mismatches]
    report.missing_target += [f"backbone.{k}" for k in bb_report.missing_target]
    network = {f"backbone.{k}": v for k, v in converted_bb.items()}

    # Head.
    structure = _head_structure(head, dilations)
    expected = _target_shapes(variant, structure, dilations)
    src = f"{prefix}decode_head."
    filled_by: Dict[str, str] = {}
    for rel, value in head.items():
        target = _map_head_key(rel, structure)
        if target is None:
            report.unmatched_source.append((src + rel, "not a key of DAFormerHead with "
                                                       f"fusion {structure.fusion}"))
        elif target not in expected:
            report.unmatched_source.append(
                (src + rel, f"maps to '{target}', which the converted network does not have"))
        elif target in filled_by:
            report.unmatched_source.append((src + rel, f"duplicate of '{filled_by[target]}'"))
        elif tuple(value.shape) != expected[target]:
            report.shape_mismatches.append((target, f"'{src + rel}'", str(list(value.shape)),
                                            expected[target]))
            filled_by[target] = src + rel
        else:
            network[target] = value.contiguous()
            filled_by[target] = src + rel
    mismatched = {t for t, *_ in report.shape_mismatches}
    report.missing_target += [k for k in expected if k.startswith("head.")
                              and k not in network and k not in mismatched]
    network = OrderedDict((k, network[k]) for k in expected if k in network)
    report.converted = list(network)

    info = {
        "variant": variant,
        "head": "DAFormerHead",
        "embed_dim": structure.embed_dim,
        "fusion": structure.fusion,
        "aspp_dilations": dilations,
        "num_classes": structure.num_classes,
        "which": chosen,
        "source_layout": layout,
    }
    return network, info, report


# ----------------------------------------------------------------------------- config


def network_config_opts(info: Mapping[str, Any]) -> List[str]:
    """``KEY VALUE`` strings (for ``merge_from_list``, a command line or
    ``MODEL.DUDA.LARGE_NETWORK_OPTS``) that describe the converted network."""
    return ["MODEL.BACKBONE.NAME", "build_mit_backbone",
            "MODEL.MIT.VARIANT", str(info["variant"]),
            "MODEL.SEM_SEG_HEAD.NAME", str(info.get("head", "DAFormerHead")),
            "MODEL.SEM_SEG_HEAD.IN_FEATURES", str(list(IN_FEATURES)),
            "MODEL.SEM_SEG_HEAD.EMBED_DIM", str(int(info["embed_dim"])),
            "MODEL.SEM_SEG_HEAD.FUSION", str(info["fusion"]),
            "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", str([int(d) for d in info["aspp_dilations"]]),
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(int(info["num_classes"]))]


# ----------------------------------------------------------------------------- CLI


def add_from_mmseg_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``tools/convert_model.py from-mmseg``."""
    parser.add_argument("checkpoint", help="DAFormer mmseg checkpoint (.pth: a plain "
                                           "EncoderDecoder or a DACS UDA run's latest.pth)")
    parser.add_argument("--which", choices=WHICH, default="auto",
                        help="network of a UDA checkpoint: model (the adapted network DAFormer "
                             "evaluates), ema_model (its EMA teacher); auto: model")
    parser.add_argument("--aspp-dilations", type=int, nargs="+",
                        default=list(DEFAULT_ASPP_DILATIONS), metavar="D",
                        help="ASPP dilations of the head: not stored in the weights "
                             "(default: DAFormer's 1 6 12 18)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read a checkpoint torch's safe loader refuses (unpickling can run "
                             "code: only files from a source you trust)")
    return parser
