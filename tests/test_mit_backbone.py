import pytest
import torch

from detectron2.modeling import build_backbone

from duda_d2.modeling.backbone.mit import MIT_SPECS, MixVisionTransformer
from helpers import config

# SegFormer's published encoder sizes (millions of parameters).
PUBLISHED_MILLIONS = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}


@pytest.mark.parametrize("variant", sorted(PUBLISHED_MILLIONS))
def test_parameter_count_matches_segformer(variant):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = MixVisionTransformer(MIT_SPECS[variant])
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - PUBLISHED_MILLIONS[variant]) / PUBLISHED_MILLIONS[variant] < 0.03


def test_registered_builder_gives_strides_and_channels():
    cfg = config("configs/networks/mit_b0_segformer.yaml", "MODEL.MIT.VARIANT", "b1")
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (64, 4), "res3": (128, 8), "res4": (320, 16), "res5": (512, 32)}
    features = backbone(torch.randn(1, 3, 64, 96))
    for name, spec in shapes.items():
        assert features[name].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)


def test_odd_sizes_round_up_like_overlapping_convs():
    model = MixVisionTransformer(MIT_SPECS["b0"]).eval()
    out = model(torch.randn(1, 3, 70, 50))
    assert [tuple(out[k].shape[2:]) for k in ("res2", "res3", "res4", "res5")] == [
        (18, 13), (9, 7), (5, 4), (3, 2)]


def test_out_features_subset_and_unknown_name():
    model = MixVisionTransformer(MIT_SPECS["b0"], out_features=("res3", "res5"))
    assert sorted(model(torch.randn(1, 3, 64, 64))) == ["res3", "res5"]
    assert sorted(model.output_shape()) == ["res3", "res5"]
    with pytest.raises(ValueError, match="res6"):
        MixVisionTransformer(MIT_SPECS["b0"], out_features=("res6",))


def test_unknown_variant_is_a_clear_error():
    cfg = config("configs/networks/mit_b0_segformer.yaml", "MODEL.MIT.VARIANT", "b9")
    with pytest.raises(ValueError, match="b9.*b0"):
        build_backbone(cfg)


def test_gradients_reach_every_parameter():
    # No stochastic depth: a block dropped for the whole batch would get no gradient.
    # A random projection of the outputs, not their mean: the mean of a LayerNorm's output
    # over its channels does not depend on its input (unit gain), so a mean would leave the
    # last stage with gradients that are zero up to rounding (and sometimes exactly zero).
    generator = torch.Generator().manual_seed(0)
    model = MixVisionTransformer(MIT_SPECS["b0"], drop_path_rate=0.0)
    out = model(torch.randn(2, 3, 64, 64, generator=generator))
    sum((v * torch.randn(v.shape, generator=generator)).mean() for v in out.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_stochastic_depth_grows_linearly_and_is_off_in_eval():
    model = MixVisionTransformer(MIT_SPECS["b0"], drop_path_rate=0.1)
    rates = [b.drop_path.drop_prob for i in range(1, 5) for b in getattr(model, f"block{i}")
             if hasattr(b.drop_path, "drop_prob")]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 8).tolist()[1:])
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x)["res5"], model(x)["res5"])
