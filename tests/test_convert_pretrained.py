"""tools/convert_pretrained.py: official SegFormer and HuggingFace MiT layouts -> backbone keys.

The checkpoints are made here: a ``MixVisionTransformer`` state dict filled with random values,
renamed back to each release's layout by an inverse mapping written independently of the
converter.
"""
import os
import re
import subprocess
import sys
from unittest import mock

import pytest
import torch

from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_pretrained  # noqa: E402

from duda_d2.modeling.backbone import mit  # noqa: E402
from duda_d2.modeling.backbone.mit import MIT_SPECS, MixVisionTransformer  # noqa: E402
from duda_d2.modeling.backbone.mit_convert import (  # noqa: E402
    convert_state_dict,
    load_state_dict_file,
)

_MODELS = {}
_REFERENCES = {}


def model(variant):
    """One ``MixVisionTransformer`` per variant, shared by the tests (loading overwrites it)."""
    if variant not in _MODELS:
        # Every value is overwritten by the tests: skip the (slow) SegFormer initialisation.
        with mock.patch.object(mit, "_init_weights", lambda m: None):
            _MODELS[variant] = MixVisionTransformer(MIT_SPECS[variant], drop_path_rate=0.0)
    return _MODELS[variant]


def reference(variant):
    """This project's state dict for ``variant`` with every tensor random (not ones/zeros)."""
    if variant not in _REFERENCES:
        gen = torch.Generator().manual_seed(0)
        _REFERENCES[variant] = {k: torch.randn(v.shape, generator=gen)
                                for k, v in model(variant).state_dict().items()}
    return _REFERENCES[variant]


def to_official(sd, num_classes=1000):
    """The layout of SegFormer's mit_b*.pth: dwconv nested once more, plus a classifier."""
    out = {k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv."): v for k, v in sd.items()}
    width = sd["norm4.weight"].shape[0]
    out["head.weight"] = torch.randn(num_classes, width)
    out["head.bias"] = torch.randn(num_classes)
    return out


_HF_BLOCK = {"norm1": "layer_norm_1", "attn.q": "attention.self.query",
             "attn.sr": "attention.self.sr", "attn.norm": "attention.self.layer_norm",
             "attn.proj": "attention.output.dense", "norm2": "layer_norm_2",
             "mlp.fc1": "mlp.dense1", "mlp.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.dense2"}


def to_huggingface(sd, prefix="segformer.", num_classes=1000):
    """transformers' SegformerForImageClassification layout (kv split into key and value)."""
    out = {}
    for key, value in sd.items():
        m = re.match(r"patch_embed(\d)\.(proj|norm)\.(\w+)$", key)
        if m:
            stage, sub = int(m.group(1)) - 1, "proj" if m.group(2) == "proj" else "layer_norm"
            out[f"{prefix}encoder.patch_embeddings.{stage}.{sub}.{m.group(3)}"] = value
            continue
        m = re.match(r"norm(\d)\.(\w+)$", key)
        if m:
            out[f"{prefix}encoder.layer_norm.{int(m.group(1)) - 1}.{m.group(2)}"] = value
            continue
        m = re.match(r"block(\d)\.(\d+)\.(.+)\.(\w+)$", key)
        assert m, key
        base = f"{prefix}encoder.block.{int(m.group(1)) - 1}.{m.group(2)}."
        if m.group(3) == "attn.kv":
            k, v = value.chunk(2, dim=0)  # cloned: safetensors refuses shared storage
            out[base + f"attention.self.key.{m.group(4)}"] = k.clone()
            out[base + f"attention.self.value.{m.group(4)}"] = v.clone()
        else:
            out[base + f"{_HF_BLOCK[m.group(3)]}.{m.group(4)}"] = value
    width = sd["norm4.weight"].shape[0]
    out["classifier.weight"] = torch.randn(num_classes, width)
    out["classifier.bias"] = torch.randn(num_classes)
    return out


def assert_matches(converted, variant):
    """Loads strictly into the real backbone and equals the reference tensor by tensor."""
    net = model(variant)
    net.load_state_dict(converted, strict=True)
    ref = reference(variant)
    assert set(converted) == set(ref)
    for key, value in net.state_dict().items():
        assert torch.equal(value, ref[key]), key


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_official_layout(variant):
    converted, report = convert_state_dict(to_official(reference(variant)))
    assert report.ok, report.problems()
    assert report.source_format == "segformer" and report.variant == variant
    assert sorted(k for k, _ in report.dropped) == ["head.bias", "head.weight"]
    assert len(report.converted) == len(reference(variant))
    assert_matches(converted, variant)


@pytest.mark.parametrize("variant,prefix", [("b0", "segformer."), ("b1", "segformer."),
                                            ("b0", "")])
def test_huggingface_layout(variant, prefix):
    ckpt = to_huggingface(reference(variant), prefix=prefix)
    converted, report = convert_state_dict(ckpt)
    assert report.ok, report.problems()
    assert report.source_format == "huggingface" and report.variant == variant
    assert sorted(k for k, _ in report.dropped) == ["classifier.bias", "classifier.weight"]
    # kv is cat(key, value): spot-check one explicitly.
    kv = converted["block1.0.attn.kv.weight"]
    base = f"{prefix}encoder.block.0.0.attention.self."
    assert torch.equal(kv, torch.cat([ckpt[base + "key.weight"], ckpt[base + "value.weight"]]))
    assert_matches(converted, variant)


def test_variant_is_checked():
    with pytest.raises(ValueError, match="MiT-b0.*not MiT-b1"):
        convert_state_dict(to_official(reference("b0")), variant="b1")
    converted, report = convert_state_dict(to_official(reference("b0")), variant="b0")
    assert report.ok and report.variant == "b0"


def test_unrecognised_layout():
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        convert_state_dict({"conv1.weight": torch.zeros(1)})


def test_wrapped_checkpoint_file(tmp_path):
    path = str(tmp_path / "mit_b0.pth")
    torch.save({"state_dict": to_official(reference("b0"))}, path)
    converted, report = convert_state_dict(load_state_dict_file(path))
    assert report.ok and report.variant == "b0"
    assert_matches(converted, "b0")


def test_cli_subprocess(tmp_path):
    src, dst = str(tmp_path / "mit_b0.pth"), str(tmp_path / "out" / "mit_b0_d2.pth")
    torch.save(to_official(reference("b0")), src)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_pretrained.py"),
                           src, dst], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "converted 176 tensors" in proc.stdout and "head.weight" in proc.stdout
    ckpt = torch.load(dst, map_location="cpu", weights_only=True)
    assert ckpt["__author__"] == "duda_d2.convert_pretrained"
    assert ckpt["variant"] == "b0" and ckpt["source"] == src
    assert_matches(ckpt["model"], "b0")
    assert os.listdir(os.path.dirname(dst)) == ["mit_b0_d2.pth"]  # no temporary file left


def _run_main(capsys, *argv):
    rc = convert_pretrained.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_unknown_key_fails_unless_allowed(tmp_path, capsys):
    ckpt = to_huggingface(reference("b0"))
    ckpt["segformer.encoder.extra_token"] = torch.zeros(4)
    src, dst = tmp_path / "pytorch_model.bin", tmp_path / "out.pth"
    torch.save(ckpt, src)
    rc, out, err = _run_main(capsys, src, dst)
    assert rc == 1 and "segformer.encoder.extra_token" in err and not dst.exists()
    rc, out, err = _run_main(capsys, src, dst, "--allow-unmatched")
    assert rc == 0 and "segformer.encoder.extra_token" in out and dst.exists()
    assert_matches(torch.load(dst, weights_only=True)["model"], "b0")


def test_wrong_shape_fails_unless_allowed(tmp_path, capsys):
    ckpt = to_official(reference("b0"))
    ckpt["block2.1.mlp.fc1.weight"] = torch.zeros(3, 3)
    src, dst = tmp_path / "mit_b0.pth", tmp_path / "out.pth"
    torch.save(ckpt, src)
    rc, out, err = _run_main(capsys, src, dst)
    assert rc == 1 and "block2.1.mlp.fc1.weight" in err and "shape" in err
    assert not dst.exists()
    rc, out, err = _run_main(capsys, src, dst, "--allow-unmatched")
    assert rc == 0 and "block2.1.mlp.fc1.weight" in out
    model = torch.load(dst, weights_only=True)["model"]
    assert "block2.1.mlp.fc1.weight" not in model and len(model) == 175


def test_missing_key_or_value_is_reported():
    ckpt = to_huggingface(reference("b0"))
    del ckpt["segformer.encoder.block.3.1.attention.self.value.bias"]
    _, report = convert_state_dict(ckpt)
    problems = "\n".join(report.problems())
    assert not report.ok
    assert "segformer.encoder.block.3.1.attention.self.key.bias" in problems
    assert "block4.1.attn.kv.bias" in problems


def test_missing_input(tmp_path, capsys):
    missing = tmp_path / "nope" / "mit_b0.pth"
    rc, out, err = _run_main(capsys, missing, tmp_path / "out.pth")
    assert rc == 1 and str(missing) in err and "does not exist" in err
    with pytest.raises(FileNotFoundError, match="mit_b0.pth"):
        load_state_dict_file(str(missing))


def test_safetensors_input(tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    src, dst = tmp_path / "model.safetensors", tmp_path / "mit_b0.pth"
    safetensors_torch.save_file(to_huggingface(reference("b0")), str(src))
    rc, out, err = _run_main(capsys, src, dst)
    assert rc == 0, err
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt["variant"] == "b0"
    assert_matches(ckpt["model"], "b0")
