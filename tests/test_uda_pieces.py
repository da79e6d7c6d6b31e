"""The pure-tensor UDA pieces against hand-computed expectations."""

import pytest
import torch
from torch import nn

from duda_d2.uda.augment import StrongAugmentation
from duda_d2.uda.ema import ema_alpha, ema_update
from duda_d2.uda.losses import downscale_labels_by_purity, feature_distance_loss
from duda_d2.uda.masking import block_mask
from duda_d2.uda.mix import class_mix_masks, mix_images, mix_maps
from duda_d2.uda.pseudo_label import pseudo_labels


def test_ema_alpha_ramps_then_caps():
    assert ema_alpha(0, 0.999) == 0.0
    assert ema_alpha(1, 0.999) == 0.5
    assert ema_alpha(9, 0.999) == pytest.approx(0.9)
    assert ema_alpha(10**6, 0.999) == 0.999


def test_ema_update_averages_params_and_float_buffers_copies_int_buffers():
    teacher, student = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        teacher.running_mean.fill_(0.0)
        student.running_mean.fill_(10.0)
        student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.75)
    assert teacher.weight.tolist() == [1.5, 1.5]            # 0.75 * 1 + 0.25 * 3
    assert teacher.running_mean.tolist() == [2.5, 2.5]      # 0.75 * 0 + 0.25 * 10
    assert teacher.num_batches_tracked.item() == 7
    ema_update(teacher, student, 0.0)
    assert teacher.weight.tolist() == [3.0, 3.0]


def test_multi_tensor_ema_equals_the_per_tensor_formula_bit_for_bit():
    """On a MiT + DAFormer network (Linear, LayerNorm, Conv, BatchNorm: ~150 tensors), the
    multi-tensor update gives what ``t.mul_(a).add_(s, alpha=1-a)`` per tensor gives."""
    import copy

    from duda_d2 import load_config
    from duda_d2.modeling.network import build_segmentation_network

    cfg = load_config("configs/networks/mit_b5_daformer.yaml", [
        "MODEL.MIT.VARIANT", "b0", "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16])
    torch.manual_seed(0)
    student = build_segmentation_network(cfg)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for t in list(student.parameters()) + [b for b in student.buffers()
                                               if b.is_floating_point()]:
            t.add_(torch.randn_like(t))
        for b in student.buffers():
            if not b.is_floating_point():
                b.fill_(5)
    expected = {k: v.clone() for k, v in teacher.state_dict().items()}
    for k, s in student.state_dict().items():
        if s.is_floating_point():
            expected[k].mul_(0.999).add_(s, alpha=1.0 - 0.999)
        else:
            expected[k].copy_(s)
    ema_update(teacher, student, 0.999)
    got = teacher.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert got["head.fuse.branches.0.1.num_batches_tracked"].item() == 5


def test_pseudo_labels_batch_and_pixel_weights_and_margins():
    # 2 classes, 1 image 4x1: confidences 0.9, 0.6, 0.99, 0.5 (class 0, 1, 0, tie->0)
    p0 = torch.tensor([0.9, 0.4, 0.99, 0.5])
    logits = torch.stack([p0.log(), (1 - p0).log()]).view(1, 2, 4, 1)
    out = pseudo_labels(logits, threshold=0.85, mode="batch")
    assert out.labels.view(-1).tolist() == [0, 1, 0, 0]
    assert out.quality == pytest.approx(0.5)
    assert torch.allclose(out.weight, torch.full((1, 4, 1), 0.5))
    pixel = pseudo_labels(logits, threshold=0.85, mode="pixel", ignore_top=1, ignore_bottom=1)
    assert pixel.weight.view(-1).tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="'mean'"):
        pseudo_labels(logits, mode="mean")


def test_class_mix_image_pool_takes_half_of_each_images_classes():
    labels = torch.tensor([[[0, 1], [2, 255]], [[5, 5], [5, 5]]])
    masks = class_mix_masks(labels, generator=torch.Generator().manual_seed(0), pool="image")
    first = labels[0][masks[0, 0].bool()].unique().tolist()
    assert len(first) == 2 and 255 not in first           # ceil(3 / 2) of {0, 1, 2}
    assert masks[0, 0, 1, 1] == 0                          # ignore never pasted
    assert masks[1].all()                                  # the single class of image 1
    with pytest.raises(ValueError, match="pool"):
        class_mix_masks(labels, pool="dataset")


def test_mix_combines_images_and_maps():
    masks = torch.tensor([[[[1.0, 0.0]]]])
    xs, xt = torch.full((1, 3, 1, 2), 2.0), torch.full((2, 3, 1, 2), -1.0)
    images = mix_images(masks, xs, xt)
    assert images[:, 0].tolist() == [[[2.0, -1.0]], [[2.0, -1.0]]]  # source 0 reused
    labels = mix_maps(masks, torch.tensor([[[4, 5]]]), torch.tensor([[[7, 8]], [[9, 9]]]))
    assert labels.tolist() == [[[4, 8]], [[4, 9]]]
    weight = mix_maps(masks, torch.ones(1, 1, 2), torch.full((2, 1, 2), 0.3))
    torch.testing.assert_close(weight, torch.tensor([[[1.0, 0.3]], [[1.0, 0.3]]]))
    with pytest.raises(ValueError, match="same size"):
        mix_images(masks, xs, torch.zeros(1, 3, 2, 2))


def _augment(aug, x, seed):
    torch.manual_seed(seed)
    return aug(x)


def test_strong_augmentation_is_seeded_and_keeps_the_range():
    aug = StrongAugmentation([100.0, 100.0, 100.0], [50.0, 50.0, 50.0], jitter_p=1.0, blur_p=1.0)
    x = torch.randn(2, 3, 16, 16)
    a, b, c = _augment(aug, x, 1), _augment(aug, x, 1), _augment(aug, x, 2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    unit = (a * 50 + 100) / 255
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
    identity = StrongAugmentation([100.0] * 3, [50.0] * 3, jitter_p=0.0, blur_p=0.0)
    torch.testing.assert_close(identity(x.clamp(-2, 3)), x.clamp(-2, 3))


def test_block_mask_drops_whole_blocks_at_the_ratio():
    mask = block_mask(torch.zeros(64, 3, 40, 64), ratio=0.7, block_size=8,
                      generator=torch.Generator().manual_seed(0))
    assert mask.shape == (64, 1, 40, 64)
    blocks = mask[:, 0, ::8, ::8]
    assert torch.equal(mask[:, 0], blocks.repeat_interleave(8, 1).repeat_interleave(8, 2))
    assert 1 - blocks.mean().item() == pytest.approx(0.7, abs=0.03)


def test_purity_downscaling_and_feature_distance():
    labels = torch.tensor([[[13, 13, 0, 1],
                            [13, 13, 0, 0],
                            [11, 11, 2, 2],
                            [11, 255, 2, 2]]])
    coarse = downscale_labels_by_purity(labels, (2, 2), 19, min_purity=0.75)
    # top-right cell: 0 covers 3/4 -> 0; bottom-left: 11 covers 3/4 of all its pixels.
    assert coarse.tolist() == [[[13, 0], [11, 2]]]
    feats = torch.zeros(1, 2, 2, 2, requires_grad=True)
    imnet = torch.zeros(1, 2, 2, 2)
    imnet[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 at the car cell
    imnet[0, :, 1, 1] = torch.tensor([6.0, 8.0])  # distance 10 at a stuff cell (not counted)
    loss = feature_distance_loss(feats, imnet, labels, thing_classes=[11, 13], num_classes=19)
    assert loss.item() == pytest.approx(2.5)      # (5 + 0) / 2 thing cells
    loss.backward()
    none = feature_distance_loss(feats, imnet, torch.zeros_like(labels), [11, 13], 19)
    assert none.item() == 0.0
