"""Hugging Face SegFormer (``SegformerForSemanticSegmentation``) <-> this project's network.

This project's MiT-B0...B5 + ``SegFormerHead`` network and transformers'
``SegformerForSemanticSegmentation`` compute the same function, so a trained model moves between
them by renaming tensors (and stacking / splitting the attention's key and value projections):

* ``import_huggingface_segformer(folder)`` reads a ``save_pretrained`` folder (``config.json``
  + ``model.safetensors`` or ``pytorch_model.bin``) into this project's network keys
  (``backbone.*``, ``head.*``) with the MiT variant, number of classes, decoder width and class
  names needed to build the network.
* ``export_huggingface_segformer(state, variant, num_classes, embed_dim, class_names, folder)``
  writes the inverse: a folder ``SegformerForSemanticSegmentation.from_pretrained(folder)``
  loads, with a ``preprocessor_config.json`` applying this project's pixel normalisation.

Key mapping (Hugging Face names as ``save_pretrained`` writes them, ``s`` = stage 0..3, ``j`` =
block; ours are those of ``SegmentationNetwork.state_dict()``)::

    segformer.encoder.patch_embeddings.{s}.proj.*           backbone.patch_embed{s+1}.proj.*
    segformer.encoder.patch_embeddings.{s}.layer_norm.*     backbone.patch_embed{s+1}.norm.*
    segformer.encoder.block.{s}.{j}.layer_norm_1.*          backbone.block{s+1}.{j}.norm1.*
    segformer.encoder.block.{s}.{j}.attention.self.query.*  backbone.block{s+1}.{j}.attn.q.*
    segformer.encoder.block.{s}.{j}.attention.self.key.*    backbone.block{s+1}.{j}.attn.kv.*
    segformer.encoder.block.{s}.{j}.attention.self.value.*      (key rows first, then value)
    segformer.encoder.block.{s}.{j}.attention.self.sr.*     backbone.block{s+1}.{j}.attn.sr.*
    segformer.encoder.block.{s}.{j}.attention.self.layer_norm.*  ...block{s+1}.{j}.attn.norm.*
    segformer.encoder.block.{s}.{j}.attention.output.dense.*  ...block{s+1}.{j}.attn.proj.*
    segformer.encoder.block.{s}.{j}.layer_norm_2.*          backbone.block{s+1}.{j}.norm2.*
    segformer.encoder.block.{s}.{j}.mlp.dense1.*            backbone.block{s+1}.{j}.mlp.fc1.*
    segformer.encoder.block.{s}.{j}.mlp.dwconv.dwconv.*     backbone.block{s+1}.{j}.mlp.dwconv.*
    segformer.encoder.block.{s}.{j}.mlp.dense2.*            backbone.block{s+1}.{j}.mlp.fc2.*
    segformer.encoder.layer_norm.{s}.*                      backbone.norm{s+1}.*
    decode_head.linear_c.{i}.proj.{weight,bias}             head.embed.linear_c.{i}.{weight,bias}
    decode_head.linear_fuse.weight                          head.linear_fuse.0.weight
    decode_head.batch_norm.{weight,bias,running_mean,running_var,num_batches_tracked}
                                                            head.linear_fuse.1.*
    decode_head.classifier.{weight,bias}                    head.linear_pred.{weight,bias}

The encoder half is ``duda_d2.modeling.backbone.mit_convert``'s HuggingFace mapping (the one
``tools/convert_pretrained.py`` uses for ImageNet weights); this module adds the decode head.
transformers >= 5 names its modules differently (``segformer.stages.{s}.blocks.{j}.attention
.q_proj``, ``decode_head.linear_projections.{i}``, ...) but still writes the names above;
files with either naming are read, and export loads into whichever the installed version has.

Both heads concatenate the four projected levels coarsest first, upsample bilinearly with
``align_corners=False`` to stride 4, and return stride-4 logits. The one numerical difference:
Hugging Face's block and stage LayerNorms use eps 1e-5, the official SegFormer (and this
project) 1e-6; on a random-weight MiT-B0 the logits then differ by about 1e-7 (tests), and the
difference grows with depth only through that eps (relative 1e-5 / variance per norm).

The pixel statistics come from ``preprocessor_config.json`` when the folder has one
(``MODEL.PIXEL_MEAN``/``PIXEL_STD`` = image_mean/std divided by the rescale factor).

Licence: SegFormer / MiT weights (NVIDIA's release, and the ``nvidia/segformer-*`` and
``nvidia/mit-*`` Hugging Face models) are under the NVIDIA Source Code License for SegFormer,
which allows non-commercial use only (research or evaluation). It travels with weights
converted from them, in either direction (``LICENCE_NOTE``).

Import needs torch (and safetensors for ``.safetensors`` files); export needs transformers.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ...utils.atomic_files import atomic_write_bytes
from ...utils.user_errors import UserError
from ..backbone.mit_convert import (
    ConversionReport,
    convert_state_dict,
    huggingface_target,
    load_state_dict_file,
)

__all__ = [
    "ARCHITECTURE",
    "DEFAULT_PIXEL_MEAN",
    "DEFAULT_PIXEL_STD",
    "ImportedModel",
    "InterchangeError",
    "InterchangeReport",
    "LICENCE_NOTE",
    "check_output_dir",
    "export_huggingface_segformer",
    "import_huggingface_segformer",
    "segformer_network_settings",
]

ARCHITECTURE = "SegformerForSemanticSegmentation"
HF_FORMAT = "huggingface-segformer"
LICENCE_NOTE = (
    "Licence: SegFormer/MiT weights are NVIDIA's, under the NVIDIA Source Code License for "
    "SegFormer (non-commercial use only: research or evaluation; "
    "https://github.com/NVlabs/SegFormer/blob/master/LICENSE). The licence travels with "
    "weights converted from them, in either direction.")
# ImageNet mean / std on the 0..255 scale, RGB (configs/Base-Segmentation.yaml).
DEFAULT_PIXEL_MEAN = (123.675, 116.28, 103.53)
DEFAULT_PIXEL_STD = (58.395, 57.12, 57.375)
IN_FEATURES = ("res2", "res3", "res4", "res5")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# SegformerConfig's defaults, for fields a config.json leaves out.
_HF_DEFAULTS: Dict[str, Any] = {
    "num_channels": 3, "num_encoder_blocks": 4, "depths": [2, 2, 2, 2],
    "sr_ratios": [8, 4, 2, 1], "hidden_sizes": [32, 64, 160, 256], "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2], "num_attention_heads": [1, 2, 5, 8], "mlp_ratios": [4, 4, 4, 4],
    "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    "classifier_dropout_prob": 0.1, "drop_path_rate": 0.1, "decoder_hidden_size": 256,
    "semantic_loss_ignore_index": 255, "reshape_last_stage": True,
}
# Fields this project's MiT fixes, whatever the variant.
_FIXED = {"num_channels": 3, "num_encoder_blocks": 4, "patch_sizes": [7, 3, 3, 3],
          "strides": [4, 2, 2, 2], "reshape_last_stage": True, "hidden_act": "gelu"}
_ENCODER_ONLY = ("SegformerModel", "SegformerForImageClassification")

# Decode head: Hugging Face (on-disk names) -> ours.
_HEAD_RES = (
    (re.compile(r"^decode_head\.linear_c\.(\d+)\.proj\.(weight|bias)$"),
     r"head.embed.linear_c.\1.\2"),
    (re.compile(r"^decode_head\.linear_fuse\.weight$"), "head.linear_fuse.0.weight"),
    (re.compile(r"^decode_head\.batch_norm\.(weight|bias|running_mean|running_var|"
                r"num_batches_tracked)$"), r"head.linear_fuse.1.\1"),
    (re.compile(r"^decode_head\.classifier\.(weight|bias)$"), r"head.linear_pred.\1"),
)
# transformers >= 5 module names of a block's sub-modules -> the on-disk (legacy) names.
_MODERN_BLOCK = {
    "layernorm_before": "layer_norm_1", "attention.q_proj": "attention.self.query",
    "attention.k_proj": "attention.self.key", "attention.v_proj": "attention.self.value",
    "attention.sequence_reduction.sequence_reduction": "attention.self.sr",
    "attention.sequence_reduction.layer_norm": "attention.self.layer_norm",
    "attention.o_proj": "attention.output.dense", "layernorm_after": "layer_norm_2",
    "mlp.fc1": "mlp.dense1", "mlp.dwconv.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.dense2",
}
_MODERN_PATCH = re.compile(r"^segformer\.stages\.(\d+)\.patch_embeddings\.(.+)$")
_MODERN_BLOCK_RE = re.compile(r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.(.+)\.([^.]+)$")
_MODERN_NORM = re.compile(r"^segformer\.stages\.(\d+)\.layer_norm\.([^.]+)$")


class InterchangeError(UserError, ValueError):
    """A model that cannot be converted: a missing file, a config or checkpoint this project's
    network cannot represent, an output folder in the way. The message says what to do."""


class InterchangeReport(ConversionReport):
    """``ConversionReport`` of a whole network (targets ``backbone.*`` and ``head.*``)."""

    def expecting(self) -> str:
        return "the network"

    def missing_hint(self, target: str) -> str:
        """For an import, the Hugging Face key(s) a missing target is made of."""
        names = _hf_names(target) if self.source_format == HF_FORMAT else []
        return f" (expected {' + '.join(repr(n) for n in names)})" if names else ""


@dataclass
class ImportedModel:
    """A Hugging Face SegFormer in this project's terms: what builds and fills the network."""

    # SegmentationNetwork state dict (``backbone.*``, ``head.*``), in the network's key order.
    state: Dict[str, torch.Tensor]
    variant: str
    num_classes: int
    embed_dim: int
    class_names: List[str]
    report: InterchangeReport
    # The weight file read, and the config.json next to it.
    source: str
    config_file: str
    # Training-time settings of the Hugging Face config, as this project's config keys.
    settings: Dict[str, Any] = field(default_factory=dict)

    def config_overrides(self) -> Dict[str, Any]:
        """The config keys (over ``configs/networks/mit_b0_segformer.yaml``) that build this
        network: backbone, variant, head, its width and classes, dropout rates."""
        return {"MODEL.TASK": "semantic",
                "MODEL.BACKBONE.NAME": "build_mit_backbone",
                "MODEL.MIT.VARIANT": self.variant,
                "MODEL.MIT.OUT_FEATURES": list(IN_FEATURES),
                "MODEL.SEM_SEG_HEAD.NAME": "SegFormerHead",
                "MODEL.SEM_SEG_HEAD.IN_FEATURES": list(IN_FEATURES),
                "MODEL.SEM_SEG_HEAD.EMBED_DIM": self.embed_dim,
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES": self.num_classes,
                **self.settings}


# ---------------------------------------------------------------------------- key names
def _to_disk_name(key: str) -> str:
    """transformers >= 5 module key -> the name ``save_pretrained`` writes (others unchanged)."""
    m = _MODERN_BLOCK_RE.match(key)
    if m and m.group(3) in _MODERN_BLOCK:
        return (f"segformer.encoder.block.{m.group(1)}.{m.group(2)}."
                f"{_MODERN_BLOCK[m.group(3)]}.{m.group(4)}")
    m = _MODERN_PATCH.match(key)
    if m:
        return f"segformer.encoder.patch_embeddings.{m.group(1)}.{m.group(2)}"
    m = _MODERN_NORM.match(key)
    if m:
        return f"segformer.encoder.layer_norm.{m.group(1)}.{m.group(2)}"
    if key.startswith("decode_head.linear_projections."):
        return "decode_head.linear_c." + key[len("decode_head.linear_projections."):]
    return key


def _hf_names(target: str) -> List[str]:
    """The Hugging Face keys (on-disk names) whose tensors our key ``target`` is made of."""
    digits = [int(d) for d in re.findall(r"(\d+)(?=\.)", target)]
    param = target.rsplit(".", 1)[-1]
    if target.startswith("backbone.") and digits:
        s = digits[0] - 1
        j = digits[1] if len(digits) > 1 else 0
        candidates = [f"segformer.encoder.patch_embeddings.{s}.{sub}.{param}"
                      for sub in ("proj", "layer_norm")]
        candidates += [f"segformer.encoder.block.{s}.{j}.{sub}.{param}"
                       for sub in _MODERN_BLOCK.values()]
        candidates.append(f"segformer.encoder.layer_norm.{s}.{param}")
    else:
        i = digits[0] if digits else 0
        candidates = [f"decode_head.linear_c.{i}.proj.{param}"] + [
            f"decode_head.{m}.{param}" for m in ("linear_fuse", "batch_norm", "classifier")]
    return [c for c in candidates if (_source_of(c) or ("",))[0] == target]


def _head_target(key: str) -> Optional[str]:
    """Our head key for a Hugging Face ``decode_head.*`` key (on-disk name), else None."""
    for pattern, target in _HEAD_RES:
        if pattern.match(key):
            return pattern.sub(target, key)
    return None


def _source_of(disk_key: str) -> Optional[Tuple[str, Optional[int]]]:
    """(our key, part) a Hugging Face key (on-disk name) takes its tensor from: part None =
    the whole tensor, 0/1 = the key/value half of ``attn.kv``. None when it maps to nothing."""
    head = _head_target(disk_key)
    if head is not None:
        return head, None
    if not disk_key.startswith("segformer."):
        return None
    target = huggingface_target(disk_key)
    return None if target is None else (f"backbone.{target[0]}", target[1])


# ---------------------------------------------------------------------------- config
def _read_config(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise InterchangeError(f"cannot read '{path}' as a Hugging Face config.json: {e}") \
            from None
    if not isinstance(config, dict):
        raise InterchangeError(f"'{path}' holds a {type(config).__name__}, not a "
                               f"Hugging Face config (a JSON object)")
    return config


def _variant_of(config: Mapping[str, Any], where: str) -> str:
    """The MiT variant a SegFormer config describes; InterchangeError naming the first field
    this project's network cannot represent."""
    from ..backbone.mit import MIT_SPECS

    def value(name):
        v = config.get(name, _HF_DEFAULTS[name])
        return list(v) if isinstance(v, (list, tuple)) else v

    def refuse(name, expected) -> InterchangeError:
        return InterchangeError(
            f"'{where}' describes a SegFormer this project's network cannot represent: "
            f"{name}={value(name)!r}, but this project's MiT + SegFormerHead needs "
            f"{name}={expected!r}")

    for name, expected in _FIXED.items():
        if value(name) != expected:
            raise refuse(name, expected)
    dims, depths = value("hidden_sizes"), value("depths")
    variant = next((n for n, s in MIT_SPECS.items()
                    if list(s.embed_dims) == dims and list(s.depths) == depths), None)
    if variant is None:
        known = "; ".join(f"MiT-{n}: hidden_sizes {list(s.embed_dims)}, depths {list(s.depths)}"
                          for n, s in MIT_SPECS.items())
        raise InterchangeError(
            f"'{where}' describes a SegFormer this project's network cannot represent: "
            f"hidden_sizes={dims}, depths={depths} match none of the MiT variants ({known})")
    spec = MIT_SPECS[variant]
    for name, expected in (("num_attention_heads", spec.num_heads),
                           ("sr_ratios", spec.sr_ratios), ("mlp_ratios", spec.mlp_ratios)):
        if value(name) != list(expected):
            raise refuse(name, list(expected))
    return variant


def _class_names(config: Mapping[str, Any], where: str) -> List[str]:
    """Class names by index from ``id2label`` (``class_i`` where it has none)."""
    id2label = config.get("id2label") or {}
    try:
        labels = {int(k): str(v) for k, v in id2label.items()}
    except (AttributeError, ValueError):
        raise InterchangeError(f"'{where}': id2label must map class indices to names, "
                               f"found {id2label!r}") from None
    num = len(labels) if labels else int(config.get("num_labels", 2))
    if labels and sorted(labels) != list(range(num)):
        raise InterchangeError(f"'{where}': id2label has the indices {sorted(labels)}, not "
                               f"0..{num - 1}")
    return [labels.get(i, f"class_{i}") for i in range(num)]


# ---------------------------------------------------------------------------- files
def _locate(path: str) -> Tuple[str, List[str]]:
    """(config.json, weight files) of a model folder, or of a weight file and its sibling
    config.json; InterchangeError saying what is missing."""
    if os.path.isfile(path):
        folder, weights = os.path.dirname(os.path.abspath(path)), [path]
    elif os.path.isdir(path):
        folder, weights = path, []
    else:
        raise InterchangeError(f"'{path}' does not exist: give a Hugging Face model folder "
                               f"(config.json + model.safetensors or pytorch_model.bin, as "
                               f"save_pretrained writes it) or its weight file")
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        raise InterchangeError(
            f"'{folder}' has no config.json: a Hugging Face model folder (save_pretrained) "
            f"holds config.json next to model.safetensors or pytorch_model.bin; download or "
            f"copy the whole folder")
    if weights:
        return config, weights
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return config, [os.path.join(folder, name)]
        index = os.path.join(folder, name + ".index.json")
        if os.path.isfile(index):  # a sharded checkpoint
            weight_map = _read_config(index).get("weight_map", {})
            return config, [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]
    raise InterchangeError(f"'{folder}' has a config.json but no weights: expected "
                           f"{' or '.join(WEIGHT_FILES)} (or a sharded *.index.json)")


def _read_weights(files: Sequence[str]) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    for path in files:
        if not os.path.isfile(path):
            raise InterchangeError(f"weight file '{path}' (named by the shard index) is missing")
        try:
            state.update(load_state_dict_file(path))
        except Exception as e:  # noqa: BLE001 -- torch's and safetensors' own errors alike
            raise InterchangeError(f"cannot read '{path}' ({type(e).__name__}): {e}; is it "
                                   f"complete (not a truncated or interrupted download)?"
                                   ) from None
    return state


def _pixel_statistics(folder: str) -> Dict[str, Any]:
    """``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` (0..255 scale) from the folder's
    ``preprocessor_config.json`` (Hugging Face's image processor: rescale, then normalise),
    so a model trained with other statistics than ImageNet's keeps them; {} without the file
    (the model card's SegFormer processors use ImageNet's, the project's default). A processor
    whose normalisation cannot be written as mean/std of 0..255 pixels is refused."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            processor = json.load(f)
    except (OSError, ValueError) as e:
        raise InterchangeError(f"cannot read '{path}': {e}") from None
    scale = float(processor.get("rescale_factor", 1 / 255)) if processor.get(
        "do_rescale", True) else 1.0
    if not processor.get("do_normalize", True):
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    else:
        mean, std = processor.get("image_mean"), processor.get("image_std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3
                and all(float(v) > 0 for v in std)):
            raise InterchangeError(f"'{path}': image_mean / image_std must be three numbers "
                                   f"each (std > 0); found {mean!r} / {std!r}")
    if processor.get("do_reduce_labels", False):
        raise InterchangeError(f"'{path}' sets do_reduce_labels: its label ids are shifted by "
                               f"one, which this project's data sets are not; convert a model "
                               f"trained without it")
    # (x * scale - m) / s  ==  (x - m / scale) / (s / scale)
    return {"MODEL.PIXEL_MEAN": [float(m) / scale for m in mean],
            "MODEL.PIXEL_STD": [float(v) / scale for v in std]}


# ---------------------------------------------------------------------------- import
def _expected_head_shapes(variant: str, embed_dim: int, num_classes: int
                          ) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of our ``SegFormerHead`` (built on the meta device: shapes only)."""
    from detectron2.layers import ShapeSpec

    from ..backbone.mit import MIT_SPECS
    from ..heads.segformer import SegFormerHead

    dims = MIT_SPECS[variant].embed_dims
    shapes = {f: ShapeSpec(channels=d, stride=s)
              for f, d, s in zip(IN_FEATURES, dims, (4, 8, 16, 32))}
    with torch.device("meta"):
        head = SegFormerHead(input_shape=shapes, in_features=list(IN_FEATURES),
                             num_classes=num_classes, embed_dim=embed_dim)
    return {f"head.{k}": tuple(v.shape) for k, v in head.state_dict().items()}


def _encoder_only_error(where: str, what: str, weights: str) -> InterchangeError:
    return InterchangeError(
        f"'{where}' is {what}: an encoder-only SegFormer (ImageNet MiT weights) with no "
        f"segmentation decode head, so there is no whole network to import. Convert it for "
        f"MODEL.BACKBONE.WEIGHTS with `python tools/convert_pretrained.py {weights} "
        f"pretrained/mit_converted.pth` and train the head")


def import_huggingface_segformer(path: str) -> ImportedModel:
    """Read a Hugging Face ``SegformerForSemanticSegmentation`` into this project's keys.

    ``path``: the ``save_pretrained`` folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``, also sharded) or one weight file with its sibling ``config.json``.
    Why strict: a model that converts with a tensor missing or reshaped would run and predict
    garbage, so every source tensor must find its target with the right shape and every
    target must be filled; otherwise an ``InterchangeError`` lists each problem (and the caller
    writes nothing). The config is checked first, so that a model this project's network
    cannot represent (another encoder layout, ``reshape_last_stage`` false, a non-GELU
    activation, an encoder-only ``SegformerModel`` / ImageNet checkpoint) is refused by the
    field that makes it so rather than by a list of mismatched tensors.
    """
    config_file, files = _locate(path)
    config = _read_config(config_file)
    if config.get("model_type", "segformer") != "segformer":
        raise InterchangeError(f"'{config_file}' is a {config.get('model_type')!r} model, not "
                               f"a SegFormer (model_type 'segformer')")
    architectures = list(config.get("architectures") or [])
    if architectures and ARCHITECTURE not in architectures:
        if any(a in _ENCODER_ONLY for a in architectures):
            raise _encoder_only_error(config_file, f"a {'/'.join(architectures)}", files[0])
        raise InterchangeError(f"'{config_file}' is a {'/'.join(architectures)}, not a "
                               f"{ARCHITECTURE}: only SegFormer semantic segmentation models "
                               f"convert to this project's network")
    variant = _variant_of(config, config_file)
    class_names = _class_names(config, config_file)
    embed_dim = int(config.get("decoder_hidden_size", _HF_DEFAULTS["decoder_hidden_size"]))

    raw = _read_weights(files)
    source = files[0] if len(files) == 1 else os.path.dirname(os.path.abspath(files[0]))
    state = {_to_disk_name(k): v for k, v in raw.items()}
    if not any(k.startswith("decode_head.") for k in state):
        raise _encoder_only_error(source, "a checkpoint without decode_head.* tensors", source)

    report = InterchangeReport(source_format=HF_FORMAT, variant=variant,
                               num_source=len(raw))
    encoder = {k: v for k, v in state.items() if k.startswith("segformer.")}
    try:
        converted, enc_report = convert_state_dict(encoder, variant)
    except ValueError as e:
        raise InterchangeError(f"'{source}': the encoder tensors do not fit the MiT-{variant} "
                               f"that '{config_file}' describes: {e}") from None
    out: Dict[str, torch.Tensor] = {f"backbone.{k}": v for k, v in converted.items()}
    report.unmatched_source += enc_report.unmatched_source
    report.unmatched_source += [(k, f"not a decoder-model tensor ({why})")
                                for k, why in enc_report.dropped]
    report.missing_target += [f"backbone.{k}" for k in enc_report.missing_target]
    report.shape_mismatches += [(f"backbone.{t}", s, got, want)
                                for t, s, got, want in enc_report.shape_mismatches]

    expected = _expected_head_shapes(variant, embed_dim, len(class_names))
    for key, value in state.items():
        if key.startswith("segformer."):
            continue
        target = _head_target(key)
        if target is None:
            report.unmatched_source.append((key, "not a SegformerForSemanticSegmentation key"))
        elif target not in expected:
            report.unmatched_source.append((key, f"maps to '{target}', which the head lacks"))
        elif not isinstance(value, torch.Tensor):
            report.unmatched_source.append((key, f"holds a {type(value).__name__}"))
        elif tuple(value.shape) != expected[target]:
            report.shape_mismatches.append((target, f"'{key}'", str(list(value.shape)),
                                            expected[target]))
        elif target in out:
            report.unmatched_source.append((key, f"a second tensor for '{target}'"))
        else:
            out[target] = value.contiguous()
    mismatched = {t for t, *_ in report.shape_mismatches}
    report.missing_target += [k for k in expected if k not in out and k not in mismatched]
    problems = report.problems()
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... ({len(problems) - 40} more)" if len(problems) > 40 else ""
        raise InterchangeError(
            f"'{source}' does not fit the MiT-{variant} + SegFormerHead (embed "
            f"{embed_dim}, {len(class_names)} classes) that '{config_file}' describes; "
            f"{len(problems)} problems:\n  {shown}{more}")
    # The network's key order: backbone (convert_state_dict keeps the model's), then head.
    state_out = {**{k: v for k, v in out.items() if k.startswith("backbone.")},
                 **{k: out[k] for k in expected}}
    report.converted = list(state_out)
    settings = {
        "MODEL.SEM_SEG_HEAD.DROPOUT": float(config.get("classifier_dropout_prob", 0.1)),
        "MODEL.MIT.DROP_PATH_RATE": float(config.get("drop_path_rate", 0.1)),
        "MODEL.MIT.DROP_RATE": float(config.get("hidden_dropout_prob", 0.0)),
        "MODEL.MIT.ATTN_DROP_RATE": float(config.get("attention_probs_dropout_prob", 0.0)),
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": int(config.get("semantic_loss_ignore_index", 255)),
        **_pixel_statistics(os.path.dirname(os.path.abspath(config_file))),
    }
    return ImportedModel(state=state_out, variant=variant, num_classes=len(class_names),
                         embed_dim=embed_dim, class_names=class_names, report=report,
                         source=os.path.abspath(source),
                         config_file=os.path.abspath(config_file), settings=settings)


# ---------------------------------------------------------------------------- export
def segformer_network_settings(network: nn.Module) -> Dict[str, Any]:
    """``variant``, ``num_classes`` and ``embed_dim`` of a ``SegmentationNetwork`` that is a
    MiT + ``SegFormerHead`` (the only kind transformers' SegFormer can hold); an
    ``InterchangeError`` saying what else to use for any other network."""
    from ..backbone.mit import MixVisionTransformer
    from ..backbone.mit_convert import infer_variant
    from ..heads.segformer import SegFormerHead

    backbone = getattr(network, "backbone", None)
    head = getattr(network, "head", None)
    what = (f"a {type(backbone).__name__} backbone + {type(head).__name__} head"
            + (" + an instance head (panoptic)"
               if getattr(network, "instance_head", None) is not None else ""))
    if not (isinstance(backbone, MixVisionTransformer) and isinstance(head, SegFormerHead)
            and getattr(network, "instance_head", None) is None):
        raise InterchangeError(
            f"cannot export {what} to Hugging Face: transformers' {ARCHITECTURE} is exactly "
            f"a MiT encoder + SegFormer all-MLP head (semantic segmentation). Export this "
            f"network with tools/export_student.py (student.pth / student.yaml / TorchScript) "
            f"instead")
    if list(head.embed.in_features) != list(IN_FEATURES) \
            or list(backbone._out_features) != list(IN_FEATURES):
        raise InterchangeError(
            f"cannot export to Hugging Face: the SegFormerHead reads {head.embed.in_features} "
            f"of the MiT's {backbone._out_features}; {ARCHITECTURE} uses all four levels "
            f"{list(IN_FEATURES)} in that order. Export it with tools/export_student.py")
    variant, found = infer_variant({k: tuple(v.shape)
                                    for k, v in backbone.state_dict().items()})
    if variant is None:
        raise InterchangeError(f"cannot export: the MiT ({found}) is none of the variants")
    return {"variant": variant, "num_classes": head.linear_pred.out_channels,
            "embed_dim": head.linear_pred.in_channels}


def _require_transformers():
    try:
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError as e:
        raise InterchangeError(f"exporting to Hugging Face needs the transformers package "
                               f"(pip install transformers safetensors): {e}") from None
    return SegformerConfig, SegformerForSemanticSegmentation


def check_output_dir(output_dir: str, overwrite: bool = False) -> None:
    """Refuse an output folder that holds files already, unless ``overwrite``: converting
    into a folder of another model would mix the two."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InterchangeError(f"output '{output_dir}' is a file, not a folder")
    entries = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise InterchangeError(f"output folder '{output_dir}' is not empty (it holds {shown}); "
                               f"pass --overwrite to replace its files, or choose an empty "
                               f"or new folder")


def export_huggingface_segformer(
        network_state: Mapping[str, torch.Tensor], variant: str, num_classes: int,
        embed_dim: int, class_names: Optional[Sequence[str]], output_dir: str, *,
        pixel_mean: Sequence[float] = DEFAULT_PIXEL_MEAN,
        pixel_std: Sequence[float] = DEFAULT_PIXEL_STD,
        classifier_dropout: float = 0.1, drop_path_rate: float = 0.1, ignore_index: int = 255,
        overwrite: bool = False) -> Dict[str, str]:
    """Write a MiT + SegFormerHead network as a Hugging Face ``save_pretrained`` folder.

    ``network_state``: the ``SegmentationNetwork`` state dict (``backbone.*``, ``head.*``; a
    ``network.`` prefix is removed), with the ``variant`` (``b0``...``b5``), ``num_classes``
    and decoder ``embed_dim`` it was built with (``segformer_network_settings`` reads them off
    a network). ``class_names`` become ``id2label``/``label2id`` (None: ``class_i``);
    ``pixel_mean``/``pixel_std`` (0..255 scale, RGB) go into ``preprocessor_config.json``, a
    ``SegformerImageProcessor`` that rescales by 1/255 and normalises by mean/255, std/255 --
    the same input the network was trained on -- and does not resize.

    Why through transformers itself: the model is built from a ``SegformerConfig``, loaded
    with ``load_state_dict(strict=True)`` and written by ``save_pretrained``, so the folder is
    what transformers writes and reads. The files are written atomically, config.json last;
    returns their paths by name. ``InterchangeError`` for tensors that do not fit (listed), or
    a non-empty ``output_dir`` without ``overwrite``.
    """
    from ..backbone.mit import MIT_SPECS

    SegformerConfig, SegformerForSemanticSegmentation = _require_transformers()
    from transformers import SegformerImageProcessor

    if variant not in MIT_SPECS:
        raise InterchangeError(f"unknown MiT variant {variant!r}; one of {sorted(MIT_SPECS)}")
    names = [f"class_{i}" for i in range(num_classes)] if class_names is None \
        else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise InterchangeError(f"{len(names)} class names for {num_classes} classes")
    check_output_dir(output_dir, overwrite)
    state = dict(network_state)
    if state and all(k.startswith("network.") for k in state):
        state = {k[len("network."):]: v for k, v in state.items()}
    spec = MIT_SPECS[variant]
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=list(spec.depths),
        sr_ratios=list(spec.sr_ratios), hidden_sizes=list(spec.embed_dims),
        patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        num_attention_heads=list(spec.num_heads), mlp_ratios=list(spec.mlp_ratios),
        hidden_act="gelu", decoder_hidden_size=int(embed_dim),
        classifier_dropout_prob=float(classifier_dropout), drop_path_rate=float(drop_path_rate),
        semantic_loss_ignore_index=int(ignore_index), reshape_last_stage=True,
        id2label={i: n for i, n in enumerate(names)},
        label2id={n: i for i, n in enumerate(names)},
        architectures=[ARCHITECTURE])
    model = SegformerForSemanticSegmentation(config).eval()

    # Each Hugging Face tensor from ours; everything of ours must be used exactly once.
    report = InterchangeReport(source_format="duda_d2", variant=variant, num_source=len(state))
    hf_state: Dict[str, torch.Tensor] = {}
    used = set()
    for hf_key, ref in model.state_dict().items():
        source = _source_of(_to_disk_name(hf_key))
        if source is None or source[0] not in state:
            report.missing_target.append(hf_key)
            continue
        ours, part = source
        tensor = state[ours]
        if part is not None:
            if tensor.dim() == 0 or tensor.shape[0] % 2:
                report.shape_mismatches.append((hf_key, f"'{ours}'", str(list(tensor.shape)),
                                                tuple(ref.shape)))
                continue
            tensor = tensor.chunk(2, dim=0)[part]
        used.add(ours)
        if tuple(tensor.shape) != tuple(ref.shape):
            report.shape_mismatches.append((hf_key, f"'{ours}'", str(list(tensor.shape)),
                                            tuple(ref.shape)))
            continue
        hf_state[hf_key] = tensor.detach().to("cpu", ref.dtype).contiguous()
    report.unmatched_source = [(k, "no Hugging Face SegFormer tensor takes it")
                               for k in state if k not in used]
    problems = report.problems()
    if problems:
        raise InterchangeError(
            f"the network does not fit a Hugging Face MiT-{variant} SegFormer (embed "
            f"{embed_dim}, {num_classes} classes); {len(problems)} problems:\n  "
            + "\n  ".join(problems[:40]))
    model.load_state_dict(hf_state, strict=True)

    processor = SegformerImageProcessor(
        do_resize=False, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[float(m) / 255 for m in pixel_mean],
        image_std=[float(s) / 255 for s in pixel_std], do_reduce_labels=False)
    paths: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="duda_hf_export_") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        # config.json last: a folder with a config has all its files.
        written = sorted(os.listdir(tmp), key=lambda n: (n == "config.json", n))
        for name in written:
            src = os.path.join(tmp, name)
            if not os.path.isfile(src):
                continue
            dst = os.path.join(output_dir, name)

            def copy(f, src=src):
                with open(src, "rb") as s:
                    shutil.copyfileobj(s, f, 1 << 22)
            atomic_write_bytes(dst, copy)
            paths[name] = dst
    return paths
