"""Instance heads (DAFormer-style and Panoptic-DeepLab's light one) under our backbones, and the
panoptic segmentation network built from a config."""
import pytest
import torch

from detectron2.projects.panoptic_deeplab import INS_EMBED_BRANCHES_REGISTRY

from duda_d2.engine.solver import is_head_parameter
from duda_d2.modeling.network import build_segmentation_network, checkpoint_networks
from helpers import config

LIGHT = "configs/networks/mit_b0_segformer_panoptic.yaml"
LARGE = "configs/networks/mit_b5_daformer_panoptic.yaml"


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_registered_in_detectron2s_instance_branch_registry():
    assert INS_EMBED_BRANCHES_REGISTRY.get("DAFormerInsEmbedHead").__name__ == "DAFormerInsEmbedHead"
    assert INS_EMBED_BRANCHES_REGISTRY.get("LightInsEmbedHead").__name__ == "LightInsEmbedHead"


@pytest.mark.parametrize("path,opts", [
    (LIGHT, []),
    (LARGE, ["MODEL.MIT.VARIANT", "b0", "MODEL.SEM_SEG_HEAD.FUSION", "conv1x1"]),
    (LARGE, ["MODEL.MIT.VARIANT", "b0", "MODEL.INS_EMBED_HEAD.FUSION", "aspp",
             "MODEL.INS_EMBED_HEAD.EMBED_DIM", 32]),
    # Any backbone of ours under either head: timm's ResNet-18 (random init).
    (LIGHT, ["MODEL.BACKBONE.NAME", "build_timm_backbone"]),
    (LARGE, ["MODEL.BACKBONE.NAME", "build_timm_backbone", "MODEL.INS_EMBED_HEAD.EMBED_DIM", 32,
             "MODEL.SEM_SEG_HEAD.EMBED_DIM", 32]),
])
def test_panoptic_network_outputs(path, opts):
    network = build_segmentation_network(config(path, *opts)).eval()
    with torch.no_grad():
        out = network(torch.randn(2, 3, 64, 96))
    assert set(out) == {"sem_seg", "center", "offset"}
    assert out["sem_seg"].shape == (2, 19, 16, 24)
    assert out["center"].shape == (2, 1, 16, 24) and out["offset"].shape == (2, 2, 16, 24)
    # The predictors start near zero (normal std 0.001, zero bias), as Panoptic-DeepLab's.
    assert out["center"].abs().max() < 0.5


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
    # One image per process trains (its ASPP pooling branch has no BatchNorm).
    network.train()
    network(torch.randn(1, 3, 64, 64))["offset"].sum().backward()


def test_light_head_is_much_smaller_than_the_daformer_style_one():
    light = build_segmentation_network(config(LIGHT)).instance_head
    large = build_segmentation_network(config(LARGE, "MODEL.MIT.VARIANT", "b0")).instance_head
    assert _params(light) * 2 < _params(large)


def test_instance_head_parameters_are_head_parameters_and_checkpoints_name_them():
    network = build_segmentation_network(config(LIGHT))
    names = [f"small_student.{n}" for n, _ in network.named_parameters()]
    assert any(n.startswith("small_student.instance_head.") for n in names)
    assert all(is_head_parameter(n) for n in names if ".instance_head." in n)
    assert not any(is_head_parameter(n) for n in names if ".backbone." in n)
    counts = checkpoint_networks(f"small_student.{k}" for k in network.state_dict())
    assert counts == {"small_student": len(network.state_dict())}


def test_bad_task_and_missing_feature_are_clear_errors():
    with pytest.raises(ValueError, match="MODEL.TASK='instance' unknown"):
        build_segmentation_network(config(LIGHT, "MODEL.TASK", "instance"))
    with pytest.raises(ValueError, match="MODEL.INS_EMBED_HEAD.IN_FEATURES"):
        build_segmentation_network(config(LIGHT, "MODEL.INS_EMBED_HEAD.IN_FEATURES",
                                          ["res2", "res3", "res6"]))
    with pytest.raises(ValueError, match="PROJECT_FEATURES"):
        build_segmentation_network(config(LIGHT, "MODEL.INS_EMBED_HEAD.PROJECT_FEATURES",
                                          ["res2"]))
    with pytest.raises(ValueError, match="FUSION='nope'"):
        build_segmentation_network(config(LARGE, "MODEL.MIT.VARIANT", "b0",
                                          "MODEL.INS_EMBED_HEAD.FUSION", "nope"))


def test_semantic_networks_have_no_instance_head():
    network = build_segmentation_network(config("configs/networks/mit_b0_segformer.yaml"))
    assert network.instance_head is None
    assert not any("instance_head" in k for k in network.state_dict())
