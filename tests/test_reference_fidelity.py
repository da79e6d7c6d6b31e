"""The self-training recipe against DAFormer/MIC's public code (lhoyer/MIC): values derived
from their definitions (``dacs_transforms.get_class_masks``, ``gaussian_blur``,
``downscale_label_ratio``, mmseg's ``CrossEntropyLoss``, ``UDADataset.get_rare_class_sample``,
``MaskingConsistencyModule``)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from detectron2.modeling import build_model

from duda_d2.data import SemSegDatasetMapper
from duda_d2.uda.augment import StrongAugmentation, blur_kernel_size
from duda_d2.uda.losses import downscale_labels_by_purity, weighted_cross_entropy
from duda_d2.uda.mix import class_mix_masks
from helpers import config


# ------------------------------------------------------------------ ClassMix (item 3)
def test_class_mix_draws_from_the_whole_batch_ignore_included():
    labels = torch.tensor([[[0, 1], [2, 255]], [[5, 5], [5, 5]]])
    masks = class_mix_masks(labels, generator=torch.Generator().manual_seed(0))
    # DACS: classes = torch.unique(batch) = [0, 1, 2, 5, 255]; per image ceil(5 / 2) = 3 drawn.
    pool = torch.tensor([0, 1, 2, 5, 255])
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        chosen = pool[torch.randperm(5, generator=g)[:3]]
        assert torch.equal(masks[i, 0], torch.isin(labels[i], chosen).float())


def test_class_mix_batch_pool_frequencies():
    # Image 1 shows one class of a 5-value batch pool: pasted with probability 3/5; the
    # ignore pixel of image 0 too.
    labels = torch.tensor([[[0, 1], [2, 255]], [[5, 5], [5, 5]]])
    g = torch.Generator().manual_seed(1)
    runs = [class_mix_masks(labels, generator=g) for _ in range(3000)]
    assert np.mean([m[1].all().item() for m in runs]) == pytest.approx(0.6, abs=0.03)
    assert np.mean([m[0, 0, 1, 1].item() for m in runs]) == pytest.approx(0.6, abs=0.03)


# ------------------------------------------------------------------ strong augmentation
def _changed(aug, x, seed):
    torch.manual_seed(seed)
    out = aug(x)
    return [not torch.allclose(o, i, atol=1e-4) for o, i in zip(out, x)]


def test_augmentation_coins_are_flipped_once_per_batch_as_dacs():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    batch = StrongAugmentation([100.0] * 3, [50.0] * 3, jitter_p=0.5, blur_p=0.0)
    outcomes = [_changed(batch, x, seed) for seed in range(40)]
    assert all(len(set(o)) == 1 for o in outcomes)            # all images or none
    assert {o[0] for o in outcomes} == {True, False}
    per_image = StrongAugmentation([100.0] * 3, [50.0] * 3, jitter_p=0.5, blur_p=0.0,
                                   coin="image")
    assert any(len(set(_changed(per_image, x, seed))) == 2 for seed in range(40))
    with pytest.raises(ValueError, match="coin"):
        StrongAugmentation([0.0] * 3, [1.0] * 3, coin="pixel")


def test_colour_jitter_adds_brightness_as_kornias_original_jitter():
    # Brightness only: kornia 0.5's ColorJitter, as DACS calls it, *adds* factor - 1 to the
    # [0, 1] image (the same shift at every intensity); torchvision's multiplies by it.
    aug = StrongAugmentation([0.0] * 3, [255.0] * 3, jitter_p=1.0, blur_p=0.0)
    aug._jitter = type(aug._jitter)(brightness=0.2, p=1.0)
    shifts = []
    for value in (0.3, 0.6):
        image = torch.full((1, 3, 4, 4), value)
        torch.manual_seed(5)  # the same factor for both
        shifts.append((aug(image) - image).mean().item())  # std 255: normalised = [0, 1]
    assert shifts[0] == pytest.approx(shifts[1], abs=1e-5) and 0 < abs(shifts[0]) <= 0.2


@pytest.mark.parametrize("length", [8, 32, 96, 100, 110, 512, 1024])
def test_blur_kernel_follows_dacs(length):
    # DACS: floor(ceil(0.1 L) - 0.5 + ceil(0.1 L) % 2)
    c = np.ceil(0.1 * length)
    assert blur_kernel_size(length) == int(np.floor(c - 0.5 + c % 2))


# ------------------------------------------------------------------ FD purity (item 4)
def _downscale_label_ratio(gt, scale, min_ratio, n_classes, ignore=255):
    """MIC's definition: ignore counts as class n_classes, avg-pool of one-hot, max."""
    out = gt.clone()
    out[out == ignore] = n_classes
    one_hot = F.one_hot(out, n_classes + 1).permute(0, 3, 1, 2).float()
    ratio, cls = F.avg_pool2d(one_hot, scale).max(dim=1)
    cls[cls == n_classes] = ignore
    cls[ratio < min_ratio] = ignore
    return cls


def test_purity_counts_unlabelled_pixels_like_downscale_label_ratio():
    labels = torch.tensor([[[13, 13, 255, 255],
                            [13, 255, 255, 7]]])
    # left cell: 13 is 3/4 of the cell -> 13; right cell: unlabelled majority -> ignore.
    assert downscale_labels_by_purity(labels, (1, 2), 19, 0.75).tolist() == [[[13, 255]]]
    # 2 of 4 pixels labelled 11, 2 ignored: 11 is half of the cell, not pure at 0.75
    # (the old rule counted labelled pixels only and kept it).
    half = torch.tensor([[[11, 11], [255, 255]]])
    assert downscale_labels_by_purity(half, (1, 1), 19, 0.75).item() == 255
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        gt = torch.randint(0, 4, (2, 16, 32), generator=g)
        gt[torch.rand(gt.shape, generator=g) < 0.3] = 255
        for ratio in (0.5, 0.75):
            torch.testing.assert_close(downscale_labels_by_purity(gt, (4, 8), 19, ratio),
                                       _downscale_label_ratio(gt, 4, ratio, 19))


# ------------------------------------------------------------------ loss (item 5)
def test_cross_entropy_is_mmseg_mean_over_all_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, generator=g)
    target = torch.randint(0, 5, (2, 8, 8), generator=g)
    target[:, :3] = 255
    weight = torch.rand(2, 8, 8, generator=g)
    # mmseg: F.cross_entropy(reduction="none", ignore_index) * weight, then .mean()
    expected = (F.cross_entropy(logits, target, ignore_index=255, reduction="none")
                * weight).mean()
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weight), expected)
    # A batch split in two equal halves averages to the whole batch's loss.
    halves = [weighted_cross_entropy(logits[i:i + 1], target[i:i + 1], weight[i:i + 1])
              for i in range(2)]
    torch.testing.assert_close(sum(halves) / 2, weighted_cross_entropy(logits, target, weight))


# ------------------------------------------------------------------ MIC mode (item 2)
ST = "configs/synthetic/self_training.yaml"
TINY_ST = ["MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.UDA.MIC_LAMBDA", 1.0,
           "MODEL.UDA.MIC_MASK_RATIO", 0.0, "MODEL.UDA.COLOR_JITTER_P", 1.0]


@pytest.mark.parametrize("mode", ["separatetrgaug", "separatetrg", "separate", "separatesrc"])
def test_mic_masks_the_images_of_its_mode(mode):
    from duda_d2.modeling.tasks import DenseTargets, UDABatch

    model = build_model(config(ST, *TINY_ST, "MODEL.UDA.MIC_MODE", mode))
    xs, xt = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    ys = torch.randint(0, 19, (2, 8, 8))
    pseudo = DenseTargets({"sem_seg": torch.randint(0, 19, (2, 8, 8))}, torch.full((2, 8, 8), 0.3),
                          0.3)
    batch = UDABatch(xs, DenseTargets({"sem_seg": ys}), xt)
    torch.manual_seed(0)
    images, targets = model.pair.masked_batch(batch, pseudo)
    labels, weight = targets.maps["sem_seg"], targets.weight_or_ones()
    if mode.startswith("separatetrg"):
        assert torch.equal(labels, pseudo.maps["sem_seg"]) and torch.equal(weight, pseudo.weight)
        assert torch.allclose(images, xt, atol=1e-4) == (mode == "separatetrg")
    elif mode == "separatesrc":
        assert torch.equal(images, xs) and torch.equal(labels, ys) and (weight == 1).all()
    else:  # MIC's "separate": the first source and the first target image, not augmented
        assert torch.equal(images, torch.cat([xs[:1], xt[:1]]))
        assert torch.equal(labels, torch.stack([ys[0], pseudo.maps["sem_seg"][0]]))
        assert weight[0].eq(1).all() and weight[1].eq(0.3).all()


def test_benchmark_configs_set_mics_mask_mode():
    for path, mode in [("configs/gta2cs/duda.yaml", "separatetrgaug"),
                       ("configs/syn2cs/duda.yaml", "separatetrgaug"),
                       ("configs/cs2acdc/duda.yaml", "separate"),
                       ("configs/cs2darkzurich/duda.yaml", "separate"),
                       ("configs/cs2acdc/self_training.yaml", "separate"),
                       ("configs/cs2darkzurich/self_training_b0.yaml", "separate"),
                       ("configs/gta2cs/self_training_b0.yaml", "separatetrgaug")]:
        assert config(path).MODEL.UDA.MIC_MODE == mode, path
    with pytest.raises(ValueError, match="MIC_MODE"):
        build_model(config(ST, "MODEL.UDA.MIC_MODE", "separatetarget"))


# ------------------------------------------------------------------ FD reference (item 4)
def test_feature_distance_without_imagenet_weights_is_an_error():
    with pytest.raises(ValueError, match=r"FD_LAMBDA.*MODEL\.BACKBONE\.WEIGHTS.*FD_RANDOM_REFERENCE"):
        build_model(config(ST, "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.UDA.FD_LAMBDA", 0.005))
    model = build_model(config(ST, "MODEL.SEM_SEG_HEAD.EMBED_DIM", 16, "MODEL.UDA.FD_LAMBDA",
                               0.005, "MODEL.UDA.FD_RANDOM_REFERENCE", True))
    assert model.pair.imagenet_reference is not None
    with pytest.raises(ValueError, match="LARGE_NETWORK_OPTS"):
        build_model(config("configs/synthetic/duda.yaml", "MODEL.UDA.FD_LAMBDA", 0.005))


# ------------------------------------------------------------------ RCS crop (item 1)
def _rare_class_record(tmp_path):
    label = np.zeros((64, 64), np.uint8)
    label[46:62, 2:18] = 12  # 256 pixels of a rare class in one corner
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(label).save(tmp_path / "lab.png")
    return {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}


def _crops(mapper, record, positions, rare_class=12):
    crops = []
    for p in positions:
        np.random.seed(p)
        crops.append(mapper(record, rare_class=rare_class)["sem_seg"])
    return crops


def test_rare_class_crop_is_redrawn_until_it_holds_the_class(tmp_path):
    record = _rare_class_record(tmp_path)
    opts = ["INPUT.CROP.SIZE", (24, 24), "DATALOADER.RCS.ENABLED", True,
            "DATALOADER.RCS.MIN_PIXELS", 60]
    retry = SemSegDatasetMapper(config("configs/synthetic/Base-SYNTHETIC.yaml", *opts),
                                is_train=True)
    assert retry.rare_class_min_pixels == 30                      # 60 * MIN_CROP_RATIO 0.5
    never = SemSegDatasetMapper(config("configs/synthetic/Base-SYNTHETIC.yaml", *opts,
                                       "DATALOADER.RCS.MIN_CROP_RATIO", 0.0), is_train=True)
    held = [int((c == 12).sum()) > 30 for c in _crops(retry, record, range(60))]
    plain = [int((c == 12).sum()) > 30 for c in _crops(never, record, range(60))]
    # A random 24 crop of 64 keeps > 30 px of the 16x16 corner with probability p ~ 1/3; with
    # 10 re-draws 1 - (1 - p)^11 ~ 0.99.
    assert np.mean(plain) < 0.5 and np.mean(held) > 0.95
    # Re-draws continue the position's own random stream: the same crops again.
    again = _crops(retry, record, range(60))
    assert all(torch.equal(a, b) for a, b in zip(_crops(retry, record, range(60)), again))
    # Without a rare class (uniform sampling, target images) nothing is re-drawn.
    np.random.seed(3)
    first = retry(record)["sem_seg"]
    np.random.seed(3)
    assert torch.equal(first, never(record, rare_class=12)["sem_seg"])


def test_the_rare_class_reaches_the_mapper(synthetic_root, monkeypatch):
    from duda_d2.data import loader as loader_module
    from duda_d2.data.samplers import RareClassSampler

    seen = []

    def mapper(record, rare_class=None):
        seen.append(rare_class)
        return record

    sampler = RareClassSampler([{3: 5000, 0: 100}, {5: 4000}], temperature=1.0, seed=0)
    stream = loader_module._PositionStream([{"i": 0}, {"i": 1}], mapper, sampler, seed=0,
                                           stream=0, batch_size=2, total_batch_size=2, rank=0,
                                           start_batch=0)
    records = [stream.sample(p) for p in range(50)]
    assert all(c == (3 if r["i"] == 0 else 5) for r, c in zip(records, seen))
