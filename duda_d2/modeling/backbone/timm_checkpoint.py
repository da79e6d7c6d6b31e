"""Load a timm hub checkpoint (``model.safetensors`` / ``pytorch_model.bin``) into a timm
``features_only`` body, through timm's own local-file mechanism, and check it strictly.

timm loads a local file when the pretrained config is overlaid with ``file=PATH``
(``timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": PATH})``): it
reads ``.safetensors`` / ``.bin`` / ``.pth`` files, applies the model's checkpoint filter
(foreign layouts, resized position embeddings) and adapts the first convolution to
``in_chans``. timm loads *feature* models leniently, though: MobileNetV3 / EfficientNet
``features_only`` bodies take a checkpoint with ``strict=False``, so a wrong file would leave
random weights without a word. Hence two checks around timm's loading:

1. the whole classification network (``num_classes=0``: timm drops the classifier) is loaded
   from the file with ``strict=True``; any missing/unexpected key or shape mismatch is an error
   that lists them (:class:`~duda_d2.modeling.backbone.mit_convert.ConversionReport`);
2. every tensor of the feature body must then equal the whole network's tensor of the same name
   (``blocks.0`` and ``blocks_0`` are the same name: feature wrappers flatten module paths), so
   nothing of the body was left as initialised.

Nothing is downloaded: ``PATH`` must exist (the user downloads the hub repository).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Tuple

import timm
import torch
from torch import nn

from .mit_convert import ConversionReport, load_state_dict_file

__all__ = ["TimmCheckpointReport", "hub_architecture", "load_timm_features"]

ARCHITECTURE = "timm"


class TimmCheckpointReport(ConversionReport):
    """A :class:`ConversionReport` whose shapes are those of a timm model ``variant``."""

    def expecting(self) -> str:
        return f"timm model {self.variant!r}"

    def missing_hint(self, target: str) -> str:
        return " (is the file for another timm model?)"


def hub_architecture(path: str) -> Optional[str]:
    """The ``architecture`` named by the ``config.json`` next to a timm hub file, if any."""
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if not os.path.isfile(config):
        return None
    try:
        with open(config) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    name = data.get("architecture") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def _base_name(model_name: str) -> str:
    return model_name.split(".", 1)[0]


def _check_architecture(model_name: str, path: str) -> None:
    named = hub_architecture(path)
    if named and _base_name(named) != _base_name(model_name):
        raise ValueError(
            f"'{path}' is a checkpoint of timm model {named!r} (its config.json says so), but "
            f"the backbone is {model_name!r}: set MODEL.TIMM.NAME to {_base_name(named)!r}, or "
            f"download the checkpoint of {_base_name(model_name)!r}")


def _flat(key: str) -> str:
    """Feature wrappers rename ``blocks.0.conv`` to ``blocks_0.conv``: compare without either."""
    return key.replace("_", ".")


def _strip_module(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _classifier_keys(model: nn.Module) -> set:
    names = model.pretrained_cfg.get("classifier", "classifier")
    names = (names,) if isinstance(names, str) else tuple(names)
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def _mismatch_report(model_name: str, source: Dict[str, torch.Tensor],
                     model: nn.Module) -> TimmCheckpointReport:
    """What the file has that the timm model (``num_classes=0``) does not, and vice versa."""
    own = model.state_dict()
    report = TimmCheckpointReport(source_format="timm checkpoint", variant=model_name,
                                  num_source=len(source), architecture=ARCHITECTURE)
    classifier = _classifier_keys(model)
    for key, value in source.items():
        if key.endswith("num_batches_tracked"):  # a counter, not a weight
            continue
        if key in own:
            if tuple(value.shape) != tuple(own[key].shape):
                report.shape_mismatches.append((key, key, str(list(value.shape)),
                                                tuple(own[key].shape)))
            else:
                report.converted.append(key)
        elif key in classifier:
            report.dropped.append((key, "ImageNet classifier, not part of a backbone"))
        else:
            report.unmatched_source.append((key, f"timm model {model_name!r} has no such tensor"))
    report.missing_target = [k for k in own if k not in source
                             and not k.endswith("num_batches_tracked")]
    return report


def _load_whole_network(model_name: str, path: str, source: Dict[str, torch.Tensor],
                        in_chans: int) -> nn.Module:
    """The classification network without its classifier, loaded strictly by timm from ``path``."""
    overlay = dict(file=os.path.abspath(path))
    try:
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay,
                                 num_classes=0, in_chans=in_chans)
    except Exception as e:  # noqa: BLE001 - timm's loading fails in many ways; all are reported
        bare = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans)
        problems = sorted(_mismatch_report(model_name, source, bare).problems(),
                          key=lambda line: not line.startswith("shape"))  # shapes first
        problems = problems or [f"{type(e).__name__}: {str(e).splitlines()[0]}"]
        raise ValueError(
            f"timm checkpoint '{path}' does not fit timm model {model_name!r} "
            f"({len(problems)} problems):\n  " + "\n  ".join(problems[:20])
            + (f"\n  ... ({len(problems) - 20} more)" if len(problems) > 20 else "")) from e


def load_timm_features(model_name: str, path: str, *, out_indices: Sequence[int],
                       in_chans: int = 3, **kwargs) -> Tuple[nn.Module, TimmCheckpointReport]:
    """``timm.create_model(model_name, features_only=True, out_indices=...)`` with the weights of
    the timm checkpoint ``path``, loaded by timm and checked strictly (see the module docstring).

    Returns the feature body and a report (converted tensors, the classifier dropped on purpose).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that does not
    fit, listing every unmatched key and shape.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"timm checkpoint '{path}' does not exist. Download the model's hub repository, e.g. "
            f"`huggingface-cli download timm/{model_name} --local-dir pretrained/{model_name}`, "
            f"and point MODEL.BACKBONE.WEIGHTS at its model.safetensors")
    _check_architecture(model_name, path)
    source = _strip_module(load_state_dict_file(path))
    whole = _load_whole_network(model_name, path, source, in_chans)
    overlay = dict(file=os.path.abspath(path))
    body = timm.create_model(model_name, features_only=True, pretrained=True,
                             pretrained_cfg_overlay=overlay, out_indices=tuple(out_indices),
                             in_chans=in_chans, **kwargs)
    reference: Dict[str, torch.Tensor] = {_flat(k): v for k, v in whole.state_dict().items()}
    loaded = body.state_dict()
    converted = [k for k in loaded if not k.endswith("num_batches_tracked")]
    not_loaded = [k for k in converted if _flat(k) not in reference
                  or not torch.equal(reference[_flat(k)], loaded[k])]
    if not_loaded:
        raise ValueError(
            f"timm loaded '{path}' into {model_name!r} but left {len(not_loaded)} tensors of its "
            f"features_only body as initialised, e.g. {not_loaded[:5]}")
    # timm loaded every tensor strictly (after its checkpoint filter): nothing is unmatched.
    report = TimmCheckpointReport(source_format="timm checkpoint", variant=model_name,
                                  num_source=len(source), architecture=ARCHITECTURE,
                                  converted=converted)
    classifier = _classifier_keys(whole)
    report.dropped += [(k, "ImageNet classifier, not part of a backbone")
                       for k in source if k in classifier]
    used = {_flat(k) for k in converted}
    report.dropped += [(k, "after the deepest feature the backbone returns")
                       for k in whole.state_dict()
                       if _flat(k) not in used and not k.endswith("num_batches_tracked")]
    return body, report
