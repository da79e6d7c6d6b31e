"""Convert ImageNet-pretrained MiT (SegFormer encoder) weights into this project's backbone keys.

Two source layouts are understood, detected from the keys:

* ``segformer``: the official SegFormer release (``mit_b0.pth`` ... ``mit_b5.pth``). Its keys are
  already this project's, except ``mlp.dwconv.dwconv.*`` (here ``mlp.dwconv.*``); the ImageNet
  classifier ``head.*`` is dropped. A checkpoint written by this converter is read the same way.
* ``huggingface``: transformers' SegFormer (``nvidia/mit-b0`` ... ``mit-b5``), with or without the
  ``segformer.`` prefix. Separate ``key``/``value`` projections are stacked into ``attn.kv``
  (key rows first); ``classifier.*`` (and a ``decode_head.*``, if any) is dropped.

The target key set and shapes come from ``MixVisionTransformer(MIT_SPECS[variant])`` itself. The
module imports only torch at import time (the model is imported when the shapes are needed).
"""
from __future__ import annotations

import functools
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    "ConversionReport",
    "convert_state_dict",
    "detect_format",
    "huggingface_target",
    "infer_variant",
    "resolve_variant",
    "load_state_dict_file",
    "target_shapes",
    "unwrap_state_dict",
]

SEGFORMER = "segformer"
HUGGINGFACE = "huggingface"

# Official SegFormer / this project: identity apart from the doubled dwconv name.
_OFFICIAL_RE = re.compile(r"^(patch_embed[1-4]\.|block[1-4]\.\d+\.|norm[1-4]\.)")
_OFFICIAL_DROP = {"head.": "ImageNet classification head"}

# transformers' SegFormer, after the optional "segformer." prefix is removed.
_HF_DROP = {"classifier.": "ImageNet classification head",
            "decode_head.": "segmentation decode head (not part of the backbone)"}
_HF_BLOCK_RENAMES = {
    "layer_norm_1": ("norm1", None),
    "attention.self.query": ("attn.q", None),
    "attention.self.key": ("attn.kv", 0),
    "attention.self.value": ("attn.kv", 1),
    "attention.self.sr": ("attn.sr", None),
    "attention.self.layer_norm": ("attn.norm", None),
    "attention.output.dense": ("attn.proj", None),
    "layer_norm_2": ("norm2", None),
    "mlp.dense1": ("mlp.fc1", None),
    "mlp.dwconv.dwconv": ("mlp.dwconv", None),
    "mlp.dense2": ("mlp.fc2", None),
}
_HF_PATCH_RE = re.compile(r"^encoder\.patch_embeddings\.(\d+)\.(proj|layer_norm)\.([^.]+)$")
_HF_BLOCK_RE = re.compile(r"^encoder\.block\.(\d+)\.(\d+)\.(.+)\.([^.]+)$")
_HF_NORM_RE = re.compile(r"^encoder\.layer_norm\.(\d+)\.([^.]+)$")

# (target key, part): part None = the whole tensor, 0/1 = the key/value half of ``attn.kv``.
_Target = Tuple[str, Optional[int]]


@dataclass
class ConversionReport:
    """What a conversion did: converted, dropped on purpose, and everything that did not match."""

    source_format: str
    variant: str
    num_source: int = 0
    converted: List[str] = field(default_factory=list)
    # (source key, why it was dropped)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    # (source key, why it maps to nothing)
    unmatched_source: List[Tuple[str, str]] = field(default_factory=list)
    # target keys that received no tensor
    missing_target: List[str] = field(default_factory=list)
    # (target key, source key(s), shape found, shape expected)
    shape_mismatches: List[Tuple[str, str, str, Tuple[int, ...]]] = field(default_factory=list)
    # the family the variant belongs to, for messages ("MiT-b0", "ResNet-101")
    architecture: str = "MiT"

    @property
    def ok(self) -> bool:
        """True when every source tensor found its target and every target got a tensor."""
        return not (self.unmatched_source or self.missing_target or self.shape_mismatches)

    def problems(self) -> List[str]:
        """One line per unmatched source key, missing target key and shape mismatch."""
        lines = [f"unmatched source key '{k}': {why}" for k, why in self.unmatched_source]
        lines += [f"missing target key '{k}': no source tensor maps to it{self.missing_hint(k)}"
                  for k in self.missing_target]
        lines += [f"shape mismatch for '{t}' (from {s}): checkpoint {got}, "
                  f"{self.expecting()} expects {list(want)}"
                  for t, s, got, want in self.shape_mismatches]
        return lines

    def expecting(self) -> str:
        """What the shapes are checked against, in messages ("MiT-b0", "ResNet-101")."""
        return f"{self.architecture}-{self.variant}"

    def missing_hint(self, target: str) -> str:
        """Text appended to a missing target key's line (subclasses name its source)."""
        return ""

    def summary(self) -> str:
        """A short human-readable account: counts, dropped keys grouped by reason."""
        lines = [f"source layout: {self.source_format}, "
                 f"variant: {self.architecture}-{self.variant}, "
                 f"{self.num_source} source tensors",
                 f"converted {len(self.converted)} tensors"]
        by_reason: Dict[str, List[str]] = {}
        for key, why in self.dropped:
            by_reason.setdefault(why, []).append(key)
        for why, keys in by_reason.items():
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
            lines.append(f"dropped {len(keys)} source tensors on purpose ({why}): {shown}")
        n = len(self.unmatched_source) + len(self.missing_target) + len(self.shape_mismatches)
        lines.append(f"unmatched: {n}" if n else "unmatched: none")
        return "\n".join(lines)


def load_state_dict_file(path: str) -> Dict[str, Any]:
    """Read a ``.pth``/``.bin`` (torch) or ``.safetensors`` file into a flat state dict on CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input checkpoint '{path}' does not exist (or is not a file)")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise RuntimeError(f"reading '{path}' needs the safetensors package: "
                               f"pip install safetensors") from e
        return load_file(path, device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"could not read '{path}' as a torch checkpoint of tensors: {e}") from e
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: Any, name: str = "checkpoint") -> Dict[str, Any]:
    """Return the state dict inside ``{"state_dict": sd}`` / ``{"model": sd}`` (or ``obj``)."""
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}} is unusual but harmless to accept
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[w] for w in ("state_dict", "model")
                      if isinstance(obj.get(w), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{name} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def detect_format(keys: List[str]) -> str:
    """``"segformer"`` or ``"huggingface"`` from the key names; ValueError when neither fits."""
    hf = any(k.startswith(("encoder.", "segformer.encoder.")) for k in keys)
    official = any(_OFFICIAL_RE.match(k) for k in keys)
    if hf and official:
        raise ValueError("checkpoint mixes official SegFormer keys (patch_embed1., block1., ...) "
                         "and HuggingFace keys (encoder.block., ...): cannot tell its layout")
    if hf:
        return HUGGINGFACE
    if official:
        return SEGFORMER
    sample = ", ".join(sorted(keys)[:6]) or "(no keys)"
    raise ValueError("unrecognised checkpoint layout: expected official SegFormer MiT keys "
                     "(patch_embed1.proj.weight, block1.0.attn.kv.weight, ...) or HuggingFace "
                     f"SegFormer keys (segformer.encoder.block.0.0...); found {sample}")


def _map_official(key: str) -> Tuple[Optional[_Target], str]:
    """(target, '') for a mapped key, (None, reason) for a dropped or unknown one."""
    for prefix, why in _OFFICIAL_DROP.items():
        if key.startswith(prefix):
            return None, why
    if not _OFFICIAL_RE.match(key):
        return None, ""
    return (key.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv."), None), ""


def _map_huggingface(key: str) -> Tuple[Optional[_Target], str]:
    """(target, '') for a mapped key, (None, reason) for a dropped or unknown one."""
    if key.startswith("segformer."):
        key = key[len("segformer."):]
    for prefix, why in _HF_DROP.items():
        if key.startswith(prefix):
            return None, why
    m = _HF_PATCH_RE.match(key)
    if m:
        stage, sub, param = int(m.group(1)) + 1, m.group(2), m.group(3)
        return (f"patch_embed{stage}.{'proj' if sub == 'proj' else 'norm'}.{param}", None), ""
    m = _HF_BLOCK_RE.match(key)
    if m and m.group(3) in _HF_BLOCK_RENAMES:
        name, part = _HF_BLOCK_RENAMES[m.group(3)]
        return (f"block{int(m.group(1)) + 1}.{m.group(2)}.{name}.{m.group(4)}", part), ""
    m = _HF_NORM_RE.match(key)
    if m:
        return (f"norm{int(m.group(1)) + 1}.{m.group(2)}", None), ""
    return None, ""


def huggingface_target(key: str) -> Optional[_Target]:
    """(backbone key, part) that the HuggingFace MiT key ``key`` (with or without ``segformer.``)
    maps to -- part None for the whole tensor, 0/1 for the key/value half of ``attn.kv`` -- or
    None for a dropped or unknown key. Exporters use it to invert the mapping."""
    return _map_huggingface(key)[0]


def target_shapes(variant: str) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of ``MixVisionTransformer(MIT_SPECS[variant]).state_dict()``."""
    return dict(_target_shapes(variant))


@functools.lru_cache(maxsize=None)
def _target_shapes(variant: str) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    from . import mit

    if variant not in mit.MIT_SPECS:
        raise ValueError(f"unknown MiT variant {variant!r}; choose one of {sorted(mit.MIT_SPECS)}")
    # Only shapes are needed: build on the meta device (no memory, no initialisation cost).
    with torch.device("meta"):
        model = mit.MixVisionTransformer(mit.MIT_SPECS[variant], drop_path_rate=0.0)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _architecture(shapes: Mapping[str, Tuple[int, ...]]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(embed dims, depths) per stage found in target-named ``shapes`` (0 where absent)."""
    dims, depths = [], []
    for i in range(1, 5):
        shape = shapes.get(f"patch_embed{i}.proj.weight")
        dims.append(int(shape[0]) if shape else 0)
        pattern = re.compile(rf"^block{i}\.(\d+)\.")
        blocks = {int(m.group(1)) for k in shapes for m in [pattern.match(k)] if m}
        depths.append(max(blocks) + 1 if blocks else 0)
    return tuple(dims), tuple(depths)


def infer_variant(shapes: Mapping[str, Tuple[int, ...]]) -> Tuple[Optional[str], str]:
    """(variant or None, description) from the stage widths and depths of target-named shapes."""
    from .mit import MIT_SPECS

    dims, depths = _architecture(shapes)
    found = f"embed dims {list(dims)}, depths {list(depths)}"
    for name, spec in MIT_SPECS.items():
        if tuple(spec.embed_dims) == dims and tuple(spec.depths) == depths:
            return name, found
    return None, found


def resolve_variant(requested, inferred, known, family: str, found: str, unknown_hint: str):
    """The variant to convert to: ``requested`` if given (it must be one of ``known`` and agree
    with ``inferred``, what the tensors say), else ``inferred``; ValueError otherwise. ``found``
    describes the checkpoint and ``unknown_hint`` ends the can't-infer message."""
    if requested is None:
        if inferred is None:
            raise ValueError(f"cannot infer the {family} variant: the checkpoint has {found}, "
                             f"which {unknown_hint}.")
        return inferred
    if requested not in known:
        raise ValueError(f"unknown {family} variant {requested!r}; choose one of "
                         f"{sorted(known)}")
    if inferred is not None and inferred != requested:
        raise ValueError(f"the checkpoint is {family}-{inferred} ({found}), not "
                         f"{family}-{requested} as requested")
    return requested


def convert_state_dict(state_dict: Mapping[str, Any], variant: Optional[str] = None
                       ) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Rename a SegFormer/HuggingFace MiT state dict to this project's backbone keys.

    ``variant`` (``"b0"`` ... ``"b5"``) is inferred from the widths and depths when None and
    checked against them otherwise. Returns the converted tensors (only those whose key and shape
    match the target model) and a report; ``report.ok`` is False when anything did not match.
    Raises ValueError when the layout or the variant cannot be determined.
    """
    from .mit import MIT_SPECS

    state_dict = _strip_prefix(unwrap_state_dict(state_dict), "module.")
    fmt = detect_format(list(state_dict))
    mapper = _map_official if fmt == SEGFORMER else _map_huggingface

    report = ConversionReport(source_format=fmt, variant=variant or "?",
                              num_source=len(state_dict))
    # target key -> {part: (source key, tensor)}
    gathered: Dict[str, Dict[Optional[int], Tuple[str, torch.Tensor]]] = {}
    for key, value in state_dict.items():
        target, why = mapper(key)
        if target is None:
            if why:
                report.dropped.append((key, why))
            else:
                report.unmatched_source.append((key, f"not a known {fmt} MiT key"))
            continue
        if not isinstance(value, torch.Tensor):
            report.unmatched_source.append((key, f"holds a {type(value).__name__}, not a tensor"))
            continue
        name, part = target
        parts = gathered.setdefault(name, {})
        if part in parts:
            report.unmatched_source.append((key, f"duplicate of '{parts[part][0]}' "
                                                 f"(both map to '{name}')"))
            continue
        parts[part] = (key, value)

    # Assemble: whole tensors as they are, attn.kv from its key (rows first) and value halves.
    assembled: Dict[str, Tuple[Tuple[str, ...], torch.Tensor]] = {}
    kv_mismatches: List[Tuple[str, Tuple[str, ...], str]] = []
    for name, parts in gathered.items():
        if None in parts:
            assembled[name] = ((parts[None][0],), parts[None][1])
            continue
        if set(parts) != {0, 1}:
            have, lack = (0, "value") if 0 in parts else (1, "key")
            report.unmatched_source.append(
                (parts[have][0], f"its {lack} counterpart is missing, cannot build '{name}'"))
            continue
        (k_name, k), (v_name, v) = parts[0], parts[1]
        sources = (k_name, v_name)
        if k.shape != v.shape or k.dim() == 0:
            kv_mismatches.append((name, sources, f"key {list(k.shape)} / value {list(v.shape)}"))
            continue
        assembled[name] = (sources, torch.cat([k, v], dim=0))

    inferred, found = infer_variant({n: tuple(t.shape) for n, (_, t) in assembled.items()})
    known = "; ".join(f"{n}: dims {list(s.embed_dims)} depths {list(s.depths)}"
                      for n, s in MIT_SPECS.items())
    variant = resolve_variant(variant, inferred, list(MIT_SPECS), "MiT", found,
                              f"matches none of {known}. Pass --variant to convert anyway")
    report.variant = variant

    expected = target_shapes(variant)
    converted: Dict[str, torch.Tensor] = {}
    for name, sources, got in kv_mismatches:
        if name not in expected:
            report.unmatched_source.extend(
                (s, f"maps to '{name}', which MiT-{variant} does not have") for s in sources)
        else:
            report.shape_mismatches.append(
                (name, " + ".join(f"'{s}'" for s in sources), got, expected[name]))
    for name, (sources, tensor) in assembled.items():
        if name not in expected:
            report.unmatched_source.extend(
                (s, f"maps to '{name}', which MiT-{variant} does not have") for s in sources)
        elif tuple(tensor.shape) != expected[name]:
            report.shape_mismatches.append((name, " + ".join(f"'{s}'" for s in sources),
                                            str(list(tensor.shape)), expected[name]))
        else:
            converted[name] = tensor.contiguous()
    # Keep the model's key order, which makes the written file easy to read.
    converted = {k: converted[k] for k in expected if k in converted}
    report.converted = list(converted)
    mismatched = {t for t, *_ in report.shape_mismatches}
    report.missing_target = [k for k in expected if k not in converted and k not in mismatched]
    return converted, report
