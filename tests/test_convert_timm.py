"""timm hub checkpoints for ``build_timm_backbone`` (issue 18): a random-weight timm
MobileNetV3 saved as a hub repository's file, loaded through MODEL.BACKBONE.WEIGHTS (timm's
local-file mechanism) or converted first, gives the original model's features (1e-5); files that
do not fit are errors that list what did not match."""
import json
import os
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from duda_d2 import add_duda_config
from duda_d2.modeling.backbone import timm_checkpoint
from duda_d2.modeling.network import load_backbone_weights
from helpers import REPO
from test_convert_resnet import _randomise_

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_pretrained  # noqa: E402

NAME = "mobilenetv3_large_100"


def hub_folder(folder, name=NAME, fmt="safetensors", config=True):
    """A timm hub repository's files for a random-weight ``name``; returns (model, file)."""
    model = _randomise_(timm.create_model(name, pretrained=False))
    os.makedirs(folder, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        path = os.path.join(folder, "model.safetensors")
        save_file(state, path)
    else:
        path = os.path.join(folder, "pytorch_model.bin")
        torch.save(state, path)
    if config:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"architecture": name, "num_classes": 1000,
                       "pretrained_cfg": {"tag": "ra_in1k"}}, f)
    return model, path


def _backbone(name=NAME, weights=""):
    cfg = add_duda_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
    cfg.MODEL.TIMM.NAME = name
    backbone = build_backbone(cfg)
    if weights:
        assert load_backbone_weights(backbone, weights) == ([], [])
    return backbone.eval()


def _assert_same_features(model, backbone):
    """``backbone`` gives the classification network's block outputs at strides 4..32."""
    reference = timm.create_model(NAME, features_only=True, out_indices=(1, 2, 3, 4))
    reference.load_state_dict({k: v for k, v in model.state_dict().items()
                               if k in reference.state_dict()})
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference.eval()(x), backbone(x)
    assert list(got) == ["res2", "res3", "res4", "res5"]
    for w, g in zip(want, got.values()):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_a_timm_hub_file_loads_through_backbone_weights(fmt, tmp_path):
    model, path = hub_folder(str(tmp_path / "hub"), fmt=fmt, config=fmt == "safetensors")
    backbone = _backbone(weights=path)
    _assert_same_features(model, backbone)
    # It really came from the file: a fresh backbone differs.
    assert not torch.equal(_backbone().state_dict()["body.conv_stem.weight"],
                           backbone.state_dict()["body.conv_stem.weight"])


def test_convert_pretrained_checks_a_timm_file_ahead_and_writes_the_bodys_keys(tmp_path, capsys):
    model, path = hub_folder(str(tmp_path / "hub"))
    out = str(tmp_path / "mnv3_d2.pth")
    assert convert_pretrained.main([path, out]) == 0  # architecture from config.json
    printed = capsys.readouterr().out
    assert "timm-mobilenetv3_large_100" in printed and "unmatched: none" in printed
    assert "ImageNet classifier" in printed and "conv_head.weight" in printed
    saved = torch.load(out, weights_only=False)
    assert saved["model"] and all(k.startswith("body.") for k in saved["model"])
    _assert_same_features(model, _backbone(weights=out))
    # --timm-model with a timm ResNet hub file: the timm body, not the Detectron2 ResNet.
    resnet = _randomise_(timm.create_model("resnet18", pretrained=False))
    torch.save(resnet.state_dict(), str(tmp_path / "r18.bin"))
    assert convert_pretrained.main([str(tmp_path / "r18.bin"), str(tmp_path / "r18.pth"),
                                    "--timm-model", "resnet18"]) == 0
    assert "timm-resnet18" in capsys.readouterr().out
    _backbone("resnet18", weights=str(tmp_path / "r18.pth"))


def test_a_timm_file_of_another_model_is_an_error_that_lists_the_keys(tmp_path, capsys):
    _, path = hub_folder(str(tmp_path / "hub"), name="mobilenetv3_small_100", config=False)
    with pytest.raises(ValueError) as error:
        _backbone(weights=path)
    message = str(error.value)
    assert "does not fit timm model 'mobilenetv3_large_100'" in message
    assert message.count("shape mismatch for '") == 20 and "more)" in message  # shapes first
    out = str(tmp_path / "out.pth")
    assert convert_pretrained.main([path, out, "--timm-model", NAME]) == 1
    assert "does not fit" in capsys.readouterr().err and not os.path.exists(out)

    # The hub folder's config.json names another architecture: said before anything loads.
    with open(str(tmp_path / "hub" / "config.json"), "w") as f:
        json.dump({"architecture": "mobilenetv3_small_100"}, f)
    with pytest.raises(ValueError, match="set MODEL.TIMM.NAME to 'mobilenetv3_small_100'"):
        _backbone(weights=path)
    with pytest.raises(FileNotFoundError, match="huggingface-cli download timm/"):
        timm_checkpoint.load_timm_features(NAME, str(tmp_path / "none.safetensors"),
                                           out_indices=(1, 2, 3, 4))


def test_one_wrong_shape_is_named(tmp_path):
    model, path = hub_folder(str(tmp_path / "hub"))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["blocks.1.0.conv_pw.weight"] = state["blocks.1.0.conv_pw.weight"][:32].contiguous()
    save_file(state, path)
    with pytest.raises(ValueError, match=r"shape mismatch for 'blocks.1.0.conv_pw.weight'.*"
                                         r"checkpoint \[32, 16, 1, 1\], timm model"):
        _backbone(weights=path)


def test_a_body_that_timm_left_as_initialised_is_an_error(tmp_path, monkeypatch):
    """timm loads MobileNetV3 feature bodies with strict=False; if that loading ever drops
    tensors (here: a features_only build that ignores the file), we say so."""
    _, path = hub_folder(str(tmp_path / "hub"))
    create = timm.create_model

    def lenient(name, features_only=False, pretrained=False, **kwargs):
        if features_only:
            pretrained = False
            kwargs.pop("pretrained_cfg_overlay", None)
        return create(name, features_only=features_only, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm_checkpoint.timm, "create_model", lenient)
    with pytest.raises(ValueError, match="left .* tensors of its features_only body as "
                                         "initialised"):
        _backbone(weights=path)
