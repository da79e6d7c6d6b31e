"""Instance heads (DAFormer-style and Panoptic-DeepLab's light one) under our backbones, and the
panoptic segmentation network built from a config."""
import pytest
import torch

from detectron2.layers import ShapeSpec
from detectron2.projects.panoptic_deeplab import INS_EMBED_BRANCHES_REGISTRY

from duda_d2.engine.solver import build_optimizer, is_head_parameter
from duda_d2.modeling.heads.daformer import ASPPFusion
from duda_d2.modeling.heads.instance import (CenterOffsetPredictors, DAFormerInsEmbedHead,
                                             LightInsEmbedHead)
from duda_d2.modeling.network import build_segmentation_network, checkpoint_networks
from helpers import config

LIGHT = "configs/networks/mit_b0_segformer_panoptic.yaml"
LARGE = "configs/networks/mit_b5_daformer_panoptic.yaml"
B0 = ["MODEL.MIT.VARIANT", "b0"]
SMALL_LARGE = B0 + ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 32, "MODEL.INS_EMBED_HEAD.EMBED_DIM", 32]
TIMM = ["MODEL.BACKBONE.NAME", "build_timm_backbone", "MODEL.TIMM.NAME", "resnet18",
        "MODEL.TIMM.OUT_FEATURES", ["res2", "res3", "res4", "res5"]]
# Detectron2's ResNet-50 with res4/res5 dilated (output stride 8: res2 1/4, res3..res5 1/8)
# under the DeepLabV2 semantic head (stride-8 logits) and either instance head (stride 4).
DILATED = ["MODEL.TASK", "panoptic", "MODEL.RESNETS.DEPTH", 50,
           "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"]]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny 64x64 maps gain nothing from intra-op threads on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(module):
    return sum(p.numel() for p in module.parameters())


def _maps(network, size=(64, 96), n=2):
    with torch.no_grad():
        return network.eval()(torch.randn(n, 3, *size))


def test_registered_in_detectron2s_instance_branch_registry():
    assert INS_EMBED_BRANCHES_REGISTRY.get("DAFormerInsEmbedHead") is DAFormerInsEmbedHead
    assert INS_EMBED_BRANCHES_REGISTRY.get("LightInsEmbedHead") is LightInsEmbedHead


@pytest.mark.parametrize("path,opts,sem_stride", [
    (LIGHT, [], 4),
    (LARGE, SMALL_LARGE, 4),
    # Any backbone of ours under either head: timm's ResNet-18 (random init, nothing downloaded)
    (LIGHT, TIMM, 4),
    (LARGE, SMALL_LARGE + TIMM, 4),
    # ... and the dilated ResNet (its DeepLabV2 semantic head stays at stride 8).
    ("configs/networks/deeplabv2_r101.yaml", DILATED + ["MODEL.INS_EMBED_HEAD.NAME",
                                                        "LightInsEmbedHead"], 8),
    ("configs/networks/deeplabv2_r101.yaml", DILATED + [
        "MODEL.INS_EMBED_HEAD.NAME", "DAFormerInsEmbedHead", "MODEL.INS_EMBED_HEAD.EMBED_DIM", 32,
        "MODEL.INS_EMBED_HEAD.IN_FEATURES", ["res2", "res3", "res4", "res5"]], 8),
], ids=["b0-light", "b0-daformer", "timm-light", "timm-daformer", "dilated-light",
        "dilated-daformer"])
def test_panoptic_network_outputs(path, opts, sem_stride):
    out = _maps(build_segmentation_network(config(path, *opts)))
    assert set(out) == {"sem_seg", "center", "offset"}
    assert out["sem_seg"].shape == (2, 19, 64 // sem_stride, 96 // sem_stride)
    assert out["center"].shape == (2, 1, 16, 24) and out["offset"].shape == (2, 2, 16, 24)
    # The predictors start near zero (normal std 0.001, zero bias), as Panoptic-DeepLab's.
    assert out["center"].abs().max() < 0.5


def test_predictors_are_initialised_as_panoptic_deeplabs():
    torch.manual_seed(0)
    heads = [build_segmentation_network(config(LIGHT)).instance_head.decoder,
             build_segmentation_network(config(LARGE, *SMALL_LARGE)).instance_head.predictors]
    for head in heads:
        for predictor in (head.center_predictor, head.offset_predictor):
            assert torch.count_nonzero(predictor.bias) == 0
            assert 0.0003 < predictor.weight.std() < 0.003  # normal(0, 0.001)


def test_offsets_are_raw_predictions_times_the_stride():
    """Hand-set predictors (weights 0, biases (1, -2)): raw offsets (1, -2) in stride units are
    (4, -8) image pixels at stride 4 and (8, -16) at stride 8; the centre map is the bias."""
    predictors = CenterOffsetPredictors(8, 4, stride=8).eval()
    for p in (predictors.offset_predictor, predictors.center_predictor):
        p.weight.data.zero_()
    predictors.offset_predictor.bias.data = torch.tensor([1.0, -2.0])
    predictors.center_predictor.bias.data = torch.tensor([0.25])
    out = predictors(torch.randn(2, 8, 5, 7))
    assert torch.equal(out["offset"][:, 0], torch.full((2, 5, 7), 8.0))
    assert torch.equal(out["offset"][:, 1], torch.full((2, 5, 7), -16.0))
    assert torch.equal(out["center"], torch.full((2, 1, 5, 7), 0.25))

    network = build_segmentation_network(config(LIGHT)).eval()
    decoder = network.instance_head.decoder
    decoder.offset_predictor.weight.data.zero_()
    decoder.offset_predictor.bias.data = torch.tensor([1.0, -2.0])
    out = _maps(network, (64, 64), 1)
    assert torch.equal(out["offset"][0, 0], torch.full((16, 16), 4.0))
    assert torch.equal(out["offset"][0, 1], torch.full((16, 16), -8.0))


def test_light_head_is_detectron2s_depthwise_head_with_offsets_in_image_pixels():
    network = build_segmentation_network(config(LIGHT)).eval()
    head = network.instance_head
    decoder = head.decoder
    assert type(decoder).__name__ == "PanopticDeepLabInsEmbedHead"
    assert decoder.use_depthwise_separable_conv
    with torch.no_grad():
        features = network.backbone(torch.randn(1, 3, 64, 64))
        center, offset = decoder.layers(features)
        out = head(features)
    torch.testing.assert_close(out["offset"], offset * 4)
    torch.testing.assert_close(out["center"], center)
    # ASPP pools globally (train_size None): another input size works without a rebuild.
    assert _maps(network, (96, 160), 1)["offset"].shape == (1, 2, 24, 40)


def test_light_head_trains_on_one_image_per_process():
    """Detectron2's ASPP image-pooling branch has no BatchNorm: a batch of 1 trains."""
    network = build_segmentation_network(config(LIGHT)).train()
    out = network(torch.randn(1, 3, 64, 64))
    (out["offset"].sum() + out["center"].sum()).backward()
    decoder = network.instance_head.decoder
    pooling = decoder.decoder["res5"]["project_conv"].convs[-1]
    assert type(pooling[0]).__name__ == "AdaptiveAvgPool2d" and pooling[1].norm is None
    for param in (decoder.center_predictor.weight, decoder.offset_predictor.weight,
                  pooling[1].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_light_head_one_by_one_aspp_level_is_a_clear_error_and_gn_trains_it():
    """A single 32x32 image has a 1x1 res5: BatchNorm cannot normalise the ASPP branches (a
    clear error, not BatchNorm's); with GroupNorm it trains; eval mode is never affected."""
    network = build_segmentation_network(config(LIGHT)).train()
    with pytest.raises(ValueError, match=r"ASPP level 'res5' \(stride 32\) is 1x1.*NORM \"GN\""):
        network(torch.randn(1, 3, 32, 32))
    network(torch.randn(2, 3, 32, 32))  # two images: two values per channel
    assert _maps(network, (32, 32), 1)["center"].shape == (1, 1, 8, 8)
    gn = build_segmentation_network(config(LIGHT, "MODEL.INS_EMBED_HEAD.NORM", "GN")).train()
    gn(torch.randn(1, 3, 32, 32))["center"].sum().backward()


def test_daformer_head_parameters_by_hand():
    """Two levels (8 and 16 channels) embedded to 16, conv1x1 fusion, head channels 4:
    embeddings 8*16+16 + 16*16+16 = 416; fusion 32*16 + BN 2*16 = 544; each branch
    16*16*9 + 32 + 16*4*9 + 8 = 2920; predictors 4+1 and 8+2 -> 416+544+2*2920+15 = 6815."""
    shapes = {"res2": ShapeSpec(channels=8, stride=4), "res3": ShapeSpec(channels=16, stride=8)}
    head = DAFormerInsEmbedHead(shapes, in_features=["res2", "res3"], embed_dim=16,
                                fusion="conv1x1", head_channels=4)
    assert _params(head) == 6815
    out = head({"res2": torch.randn(1, 8, 8, 12), "res3": torch.randn(1, 16, 4, 6)})
    assert out["center"].shape == (1, 1, 8, 12) and out["offset"].shape == (1, 2, 8, 12)


@pytest.mark.parametrize("fusion", ["aspp_dw", "aspp", "conv1x1"])
def test_daformer_instance_head_fusion_variants(fusion):
    cfg = config(LARGE, *SMALL_LARGE, "MODEL.INS_EMBED_HEAD.FUSION", fusion,
                 "MODEL.INS_EMBED_HEAD.FUSION_DILATIONS", [1, 2, 3])
    network = build_segmentation_network(cfg)
    fuse = network.instance_head.fuse
    if fusion == "conv1x1":
        assert not isinstance(fuse, ASPPFusion)
    else:
        assert isinstance(fuse, ASPPFusion) and len(fuse.branches) == 3
        # dilation 1 -> 1x1; 2, 3 -> dilated 3x3, depth-wise (groups = channels) for aspp_dw
        conv = [m for m in fuse.branches[2].modules() if isinstance(m, torch.nn.Conv2d)][0]
        assert conv.dilation == (3, 3)
        assert (conv.groups == 4 * 32) == (fusion == "aspp_dw")
    # The semantic head's fusion is its own key (DAFormer's default aspp_dw).
    assert isinstance(network.head.fuse, ASPPFusion)
    assert _maps(network)["offset"].shape == (2, 2, 16, 24)


def test_light_head_is_much_smaller_than_the_daformer_style_one():
    """At the same 256-channel width (ASPP_CHANNELS vs EMBED_DIM) under MiT-B0."""
    light = build_segmentation_network(config(LIGHT)).instance_head
    counts = {f: _params(build_segmentation_network(
        config(LARGE, *B0, "MODEL.INS_EMBED_HEAD.FUSION", f)).instance_head)
        for f in ("conv1x1", "aspp_dw")}
    assert _params(light) * 4 < counts["aspp_dw"]
    assert _params(light) < counts["conv1x1"] < counts["aspp_dw"]


def test_with_features_gives_the_backbone_features_of_the_same_pass():
    network = build_segmentation_network(config(LIGHT)).eval()
    with torch.no_grad():
        maps, features = network(torch.randn(1, 3, 64, 64), with_features=True)
    assert set(maps) == {"sem_seg", "center", "offset"}
    assert set(features) == {"res2", "res3", "res4", "res5"}
    with torch.no_grad():
        again = network.instance_head(features)
    torch.testing.assert_close(again["offset"], maps["offset"])


def test_instance_head_parameters_are_head_parameters_and_checkpoints_name_them():
    network = build_segmentation_network(config(LIGHT))
    names = [f"small_student.{n}" for n, _ in network.named_parameters()]
    assert any(n.startswith("small_student.instance_head.") for n in names)
    assert all(is_head_parameter(n) for n in names if ".instance_head." in n)
    assert not any(is_head_parameter(n) for n in names if ".backbone." in n)
    counts = checkpoint_networks(f"small_student.{k}" for k in network.state_dict())
    assert counts == {"small_student": len(network.state_dict())}


def test_optimiser_gives_the_instance_head_the_head_lr():
    cfg = config(LIGHT, "SOLVER.BASE_LR", 0.001, "SOLVER.HEAD_LR_MULTIPLIER", 10.0)
    network = build_segmentation_network(cfg)
    optimizer = build_optimizer(cfg, network)

    def lr(param):
        return next(g["lr"] for g in optimizer.param_groups
                    if any(p is param for p in g["params"]))

    assert lr(network.instance_head.decoder.center_predictor.weight) == pytest.approx(0.01)
    assert lr(network.instance_head.decoder.decoder["res5"]["project_conv"]
              .convs[0].weight) == pytest.approx(0.01)
    assert lr(network.head.linear_pred.weight) == pytest.approx(0.01)
    assert lr(network.backbone.patch_embed1.proj.weight) == pytest.approx(0.001)


def test_bad_task_and_bad_instance_head_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"MODEL.TASK='instance' unknown; use one of "
                                         r"\['semantic', 'panoptic'\]"):
        build_segmentation_network(config(LIGHT, "MODEL.TASK", "instance"))
    with pytest.raises(ValueError, match=r"in_features \['res6'\] not produced by the backbone "
                                         r".*set MODEL.INS_EMBED_HEAD.IN_FEATURES"):
        build_segmentation_network(config(LIGHT, "MODEL.INS_EMBED_HEAD.IN_FEATURES",
                                          ["res2", "res3", "res6"]))
    with pytest.raises(ValueError, match=r"DAFormerInsEmbedHead in_features \['res6'\]"):
        build_segmentation_network(config(LARGE, *B0, "MODEL.INS_EMBED_HEAD.IN_FEATURES",
                                          ["res2", "res6"]))
    with pytest.raises(ValueError, match="finest first"):
        build_segmentation_network(config(LIGHT, "MODEL.INS_EMBED_HEAD.IN_FEATURES",
                                          ["res3", "res2", "res5"]))
    with pytest.raises(ValueError, match="stride of 'res3' \\(8\\) but MODEL.INS_EMBED_HEAD."
                                         "COMMON_STRIDE is 4"):
        build_segmentation_network(config(LARGE, *B0, "MODEL.INS_EMBED_HEAD.IN_FEATURES",
                                          ["res3", "res4"]))
    with pytest.raises(ValueError, match="PROJECT_FEATURES"):
        build_segmentation_network(config(LIGHT, "MODEL.INS_EMBED_HEAD.PROJECT_FEATURES",
                                          ["res2"]))
    with pytest.raises(ValueError, match="MODEL.INS_EMBED_HEAD.FUSION='nope' unknown"):
        build_segmentation_network(config(LARGE, *B0, "MODEL.INS_EMBED_HEAD.FUSION", "nope"))
    with pytest.raises(ValueError, match=r"MODEL.INS_EMBED_HEAD.FUSION_DILATIONS is \[\]"):
        build_segmentation_network(config(LARGE, *B0, "MODEL.INS_EMBED_HEAD.FUSION_DILATIONS",
                                          []))


def test_semantic_networks_have_no_instance_head():
    network = build_segmentation_network(config("configs/networks/mit_b0_segformer.yaml"))
    assert network.instance_head is None
    assert not any("instance_head" in k for k in network.state_dict())
    assert set(_maps(network)) == {"sem_seg"}
