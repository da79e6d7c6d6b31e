"""DAFormer head variants, DeepLabV2 (dilated ResNet-101 + DeepLabV2Head), parameter totals."""
import pytest
import torch

from detectron2.modeling import build_backbone, build_model, build_sem_seg_head

from duda_d2.modeling.heads.daformer import ASPPFusion
from helpers import config


def _millions(module):
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_mit_b5_with_daformer_head_totals_85m():
    cfg = config("configs/networks/mit_b5_daformer.yaml", "MODEL.DEVICE", "meta")
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(cfg)
    assert _millions(model) == pytest.approx(85.0, rel=0.02)


def test_deeplabv2_r101_totals_43m_at_output_stride_8():
    cfg = config("configs/networks/deeplabv2_r101.yaml", "MODEL.DEVICE", "cpu")
    model = build_model(cfg).eval()
    assert _millions(model) == pytest.approx(43.0, rel=0.02)
    assert {k: (s.channels, s.stride) for k, s in
            model.network.backbone.output_shape().items()} == {"res5": (2048, 8)}
    with torch.no_grad():
        logits = model.network(torch.randn(1, 3, 64, 96))["sem_seg"]
    assert logits.shape == (1, 19, 8, 12)
    # Dilations 2 and 4 replace the strides of res4 and res5.
    res4_conv = model.network.backbone.res4[1].conv2
    res5_conv = model.network.backbone.res5[1].conv2
    assert (res4_conv.dilation, res5_conv.dilation) == ((2, 2), (4, 4))


def test_deeplabv2_head_sums_its_dilated_classifiers():
    cfg = config("configs/networks/deeplabv2_r101.yaml", "MODEL.RESNETS.DEPTH", 50)
    backbone = build_backbone(cfg)
    head = build_sem_seg_head(cfg, backbone.output_shape())
    assert [c.dilation for c in head.classifiers] == [(6, 6), (12, 12)]
    x = {"res5": torch.randn(1, 2048, 9, 9)}
    expected = head.classifiers[0](x["res5"]) + head.classifiers[1](x["res5"])
    torch.testing.assert_close(head(x), expected)


def _daformer(fusion):
    cfg = config("configs/networks/mit_b5_daformer.yaml", "MODEL.MIT.VARIANT", "b0",
                 "MODEL.SEM_SEG_HEAD.FUSION", fusion, "MODEL.SEM_SEG_HEAD.EMBED_DIM", 32)
    backbone = build_backbone(cfg)
    return backbone, build_sem_seg_head(cfg, backbone.output_shape())


def test_daformer_default_fusion_is_depthwise_separable_aspp():
    backbone, head = _daformer("aspp_dw")
    assert isinstance(head.fuse, ASPPFusion)
    branches = head.fuse.branches
    assert branches[0][0].kernel_size == (1, 1)  # dilation 1: a 1x1 branch
    depthwise = branches[1][0][0]
    assert depthwise.groups == depthwise.in_channels == 128 and depthwise.dilation == (6, 6)
    assert [b[0][0].dilation for b in branches[1:]] == [(6, 6), (12, 12), (18, 18)]
    assert head.fuse.bottleneck[0].kernel_size == (3, 3)
    assert head.dropout.p == 0.1
    logits = head(backbone(torch.randn(2, 3, 64, 64)))
    assert logits.shape == (2, 19, 16, 16)
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("fusion,expected", [("aspp", "dense 3x3"), ("conv1x1", "1x1")])
def test_daformer_variants(fusion, expected):
    backbone, head = _daformer(fusion)
    if fusion == "aspp":
        conv = head.fuse.branches[1][0]
        assert conv.kernel_size == (3, 3) and conv.groups == 1 and conv.dilation == (6, 6)
    else:
        assert head.fuse[0].kernel_size == (1, 1)
    assert head(backbone(torch.randn(1, 3, 32, 32))).shape == (1, 19, 8, 8)


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="FUSION='pyramid'"):
        _daformer("pyramid")
