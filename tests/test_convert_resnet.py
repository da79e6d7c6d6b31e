"""tools/convert_pretrained.py on torchvision / timm ResNets (issue 18, first part): a
random-weight ImageNet-layout ResNet saved, converted and loaded into the project's Detectron2
ResNet gives the same features (1e-5)."""
import os
import sys

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from detectron2.layers import ShapeSpec

from duda_d2 import load_config
from duda_d2.modeling.backbone.dilated_resnet import build_dilated_resnet_backbone
from duda_d2.modeling.network import load_backbone_weights
from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_pretrained  # noqa: E402


def _randomise_(model):
    """Random weights and BatchNorm statistics (so that the norms are tested too)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=generator) + 0.5 if "running_var" in name
                        else 0.1 * torch.randn(t.shape, generator=generator))
    return model.eval()


def _ours(path, depth, stem="basic"):
    cfg = load_config(os.path.join(REPO, "configs/networks/deeplabv2_r101.yaml"), [
        "MODEL.RESNETS.DEPTH", depth, "MODEL.RESNETS.STEM_TYPE", stem,
        "MODEL.RESNETS.RES4_DILATION", 1,
        "MODEL.RESNETS.RES5_DILATION", 1,
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"]])
    backbone = build_dilated_resnet_backbone(cfg, ShapeSpec(channels=3))
    missing, unexpected = load_backbone_weights(backbone, path)
    assert not unexpected and not missing
    return backbone.eval()


def _reference_features(model, x):
    """layer1..layer4 outputs of a torchvision/timm ResNet."""
    x = model.maxpool(model.act1(model.bn1(model.conv1(x)))) if hasattr(model, "act1") else \
        model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    for i in range(1, 5):
        x = getattr(model, f"layer{i}")(x)
        out[f"res{i + 1}"] = x
    return out


@pytest.mark.parametrize("source", ["torchvision_resnet101", "timm_resnet50_safetensors"])
def test_converted_resnet_gives_the_same_features(source, tmp_path, capsys):
    if source == "torchvision_resnet101":
        model, depth = _randomise_(torchvision.models.resnet101(weights=None)), 101
        path = str(tmp_path / "resnet101.pth")
        torch.save(model.state_dict(), path)
    else:
        model, depth = _randomise_(timm.create_model("resnet50", pretrained=False)), 50
        path = str(tmp_path / "model.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    out = str(tmp_path / "converted.pth")
    assert convert_pretrained.main([path, out]) == 0
    printed = capsys.readouterr().out
    assert f"ResNet-{depth}" in printed and "unmatched: none" in printed
    assert "ImageNet classification head" in printed  # fc.* dropped, on purpose
    ours = _ours(out, depth)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = _reference_features(model, x), ours(x)
    for name in ("res2", "res3", "res4", "res5"):
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["timm_resnet50c", "mmcv_v1c"])
def test_the_deep_v1c_stem_converts_to_deeplab_stem_with_the_same_features(layout, tmp_path,
                                                                          capsys):
    """timm's resnet50c (deep stem 32-32-64, the same network as mmcv's ResNetV1c) is the
    public reference; the mmcv/mmseg layout (``stem.{0,1,3,4,6,7}``, under ``backbone.``) is
    the same tensors renamed as mmcv names them."""
    model = _randomise_(timm.create_model("resnet50c", pretrained=False))
    state = model.state_dict()
    if layout == "mmcv_v1c":
        names = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.",
                 "conv1.4.": "stem.4.", "conv1.6.": "stem.6.", "bn1.": "stem.7."}
        state = {"backbone." + next((names[p] + k[len(p):] for p in names
                                     if k.startswith(p)), k): v
                 for k, v in state.items() if not k.startswith("fc.")}
        state = {"state_dict": state, "meta": {}}
    path = str(tmp_path / "v1c.pth")
    torch.save(state, path)
    out = str(tmp_path / "converted.pth")
    assert convert_pretrained.main([path, out]) == 0
    printed = capsys.readouterr().out
    assert "deep V1c stem" in printed and "unmatched: none" in printed
    ours = _ours(out, 50, stem="deep")
    assert type(ours.stem).__name__ == "DeepLabStem"
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = _reference_features(model, x), ours(x)
    for name in ("res2", "res3", "res4", "res5"):
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)


def test_a_resnet_checkpoint_that_does_not_fit_is_reported(tmp_path, capsys):
    state = torchvision.models.resnet50(weights=None).state_dict()
    state["layer1.0.conv2.weight"] = state["layer1.0.conv2.weight"][:, :32]
    del state["layer2.0.downsample.0.weight"]
    path = str(tmp_path / "bad.pth")
    torch.save(state, path)
    assert convert_pretrained.main([path, str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err
    assert "shape mismatch for 'res2.0.conv2.weight'" in err and "ResNet-50 expects" in err
    assert "missing target key 'res3.0.shortcut.weight'" in err
    assert not (tmp_path / "out.pth").exists()
    assert convert_pretrained.main([path, str(tmp_path / "o.pth"), "--variant", "b0"]) == 1
    assert "names a MiT" in capsys.readouterr().err
