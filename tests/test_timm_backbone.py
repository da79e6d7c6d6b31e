"""TimmBackbone: timm features_only models as Detectron2 backbones (CPU, random weights)."""
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone, build_sem_seg_head

from duda_d2 import add_duda_config
from duda_d2.modeling.backbone.timm_backbone import TimmBackbone, stride_to_name

# Features timm gives by default: {name: (stride, channels)}.
EXPECTED = {
    "mobilenetv3_large_100": {"res1": (2, 16), "res2": (4, 24), "res3": (8, 40),
                              "res4": (16, 112), "res5": (32, 960)},
    "efficientnet_b0": {"res1": (2, 16), "res2": (4, 24), "res3": (8, 40),
                        "res4": (16, 112), "res5": (32, 320)},
    "resnet18": {"res1": (2, 64), "res2": (4, 64), "res3": (8, 128),
                 "res4": (16, 256), "res5": (32, 512)},
    "convnext_atto": {"res2": (4, 40), "res3": (8, 80), "res4": (16, 160), "res5": (32, 320)},
}
MODELS = sorted(EXPECTED)
SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny 64x64 convs gain nothing from intra-op threads, and on a loaded 2-core machine
    OpenMP thread contention made them ~50x slower; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def timm_cfg(name: str, out_features=("res2", "res3", "res4", "res5")):
    cfg = add_duda_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
    cfg.MODEL.TIMM.NAME = name
    cfg.MODEL.TIMM.OUT_FEATURES = list(out_features)
    return cfg


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_matches_forward(name):
    out_features = list(EXPECTED[name])  # every feature the model has, res1 included if present
    backbone = TimmBackbone(name, out_features=out_features)
    shapes = backbone.output_shape()
    assert {k: (s.stride, s.channels) for k, s in shapes.items()} == EXPECTED[name]
    assert list(shapes) == sorted(shapes, key=lambda k: shapes[k].stride)
    assert backbone.size_divisibility == 32
    features = backbone.eval()(torch.randn(2, 3, SIZE, SIZE))
    assert list(features) == list(shapes)
    for k, spec in shapes.items():
        assert features[k].shape == (2, spec.channels, SIZE // spec.stride, SIZE // spec.stride)


@pytest.mark.parametrize("name", MODELS)
def test_registry_builds_and_gradients_reach_parameters(name):
    backbone = build_backbone(timm_cfg(name))
    assert isinstance(backbone, TimmBackbone)
    assert list(backbone.output_shape()) == ["res2", "res3", "res4", "res5"]
    features = backbone(torch.randn(2, 3, SIZE, SIZE))
    sum(f.mean() for f in features.values()).backward()
    params = list(backbone.parameters())
    assert params and all(p.grad is not None for p in params)
    assert sum(p.grad.abs().sum() for p in params) > 0


def test_subset_builds_only_up_to_the_deepest_feature():
    full = TimmBackbone("resnet18", out_features=["res2", "res5"])
    short = TimmBackbone("resnet18", out_features=["res3", "res2"])  # order does not matter
    assert list(short.output_shape()) == ["res2", "res3"]
    assert short.size_divisibility == 8
    n_full = sum(p.numel() for p in full.parameters())
    n_short = sum(p.numel() for p in short.parameters())
    assert n_short < n_full  # layer3/layer4 pruned by timm
    features = short(torch.randn(1, 3, SIZE, SIZE))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "res2": (1, 64, 16, 16), "res3": (1, 128, 8, 8)}


def test_missing_feature_names_model_request_and_available():
    cfg = timm_cfg("convnext_atto", ["res1", "res2"])  # ConvNeXt's stem is already stride 4
    with pytest.raises(ValueError) as e:
        build_backbone(cfg)
    msg = str(e.value)
    assert "convnext_atto" in msg and "res1" in msg and "res5" in msg


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown timm model 'resnet1800'.*list_models"):
        build_backbone(timm_cfg("resnet1800"))


def test_in_chans_and_drop_path_rate_from_config():
    cfg = timm_cfg("convnext_atto", ["res5"])
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.1
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.0] * 4, [1.0] * 4  # 4 input channels
    backbone = build_backbone(cfg)
    assert backbone(torch.randn(1, 4, SIZE, SIZE))["res5"].shape == (1, 320, 2, 2)
    rates = [m.drop_prob for m in backbone.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)


def test_stride_names():
    assert [stride_to_name(s) for s in (1, 2, 4, 8, 16, 32, 14)] == [
        "res0", "res1", "res2", "res3", "res4", "res5", "stride14"]


def test_plugs_into_segformer_head():
    cfg = timm_cfg("mobilenetv3_large_100")
    backbone = build_backbone(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NAME = "SegFormerHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = list(backbone.output_shape())
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 19
    cfg.MODEL.SEM_SEG_HEAD.EMBED_DIM = 32
    head = build_sem_seg_head(cfg, backbone.output_shape())
    logits = head(backbone(torch.randn(2, 3, SIZE, 96)))
    assert logits.shape == (2, 19, SIZE // 4, 96 // 4)
