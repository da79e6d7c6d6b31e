"""The panoptic task: label maps, targets, pseudo-targets, ClassMix of label maps, losses and
distillation terms, post-processing -- against hand-computed values."""
import math

import pytest
import torch

from duda_d2.modeling.tasks import DenseTargets, PanopticSettings, PanopticTask
from duda_d2.modeling.tasks.panoptic import resize_offsets
from duda_d2.modeling.tasks.semantic import PseudoLabelSettings
from duda_d2.uda.panoptic import (center_loss, masked_mean, mix_panoptic_maps, offset_loss,
                                  panoptic_ids, segments_of)

CAR, PERSON, ROAD, SKY = 13, 11, 0, 10
L = 1000
IGNORE = 255 * L
THINGS = tuple(range(11, 19))


def make_task(sigma=1.0, **kw):
    settings = PanopticSettings(thing_ids=THINGS, label_divisor=L, sigma=sigma,
                                small_instance_area=0, small_instance_weight=1, **kw)
    return PanopticTask(num_classes=19, ignore_value=255, settings=settings)


def test_label_map_encoding_and_segments():
    classes = torch.tensor([[ROAD, CAR, CAR], [255, CAR, PERSON]])
    instances = torch.tensor([[5, 1, 2], [0, 0, 3]])
    ids = panoptic_ids(classes, instances, THINGS, L)
    # Stuff drops its instance number; a thing pixel without one is crowd (instance 0).
    assert ids.tolist() == [[0, 13001, 13002], [IGNORE, 13000, 11003]]
    segments = {s["id"]: s for s in segments_of(ids, THINGS, L, 255)}
    assert sorted(segments) == [0, 11003, 13000, 13001, 13002]
    assert segments[13000]["iscrowd"] == 1 and segments[13001]["iscrowd"] == 0
    assert segments[0] == {"id": 0, "category_id": ROAD, "iscrowd": 0}


def test_mixing_label_maps_keeps_pasted_instances_apart():
    source = torch.tensor([[[13001, 13001, 13002, 0]]])
    target = torch.tensor([[[13001, 11002, 13001, 10000]]])
    masks = torch.tensor([[[[1.0, 0.0, 1.0, 0.0]]]])
    mixed = mix_panoptic_maps(masks, source, target, L)
    # The target's largest instance number is 2: pasted source instances become 3 and 4.
    assert mixed.tolist() == [[[13003, 11002, 13004, 10000]]]
    with pytest.raises(ValueError, match="label divisor"):
        mix_panoptic_maps(masks, torch.tensor([[[13900, 0, 0, 0]]]),
                          torch.tensor([[[13200, 0, 0, 0]]]), L)


def test_masked_losses_are_means_over_pixels_with_a_target():
    per_pixel = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    mask = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    assert masked_mean(per_pixel, mask).item() == pytest.approx(7 / 3)
    # A weight scales the numerator only (quality 0.5 halves the loss).
    assert masked_mean(per_pixel, mask, torch.full_like(mask, 0.5)).item() == pytest.approx(7 / 6)
    assert masked_mean(per_pixel, torch.zeros_like(mask)).item() == 0.0
    center = torch.zeros(1, 1, 2, 2)
    assert center_loss(center, per_pixel, mask).item() == pytest.approx((1 + 4 + 16) / 3)
    offset = torch.zeros(1, 2, 2, 2)
    target = torch.stack([per_pixel[0], -per_pixel[0]])[None]
    assert offset_loss(offset, target, mask).item() == pytest.approx(2 * 7 / 3)


def test_targets_from_a_label_map():
    """A 3x3 car on road in a 7x7 image: heat-map peak 1 at its centre of mass, Gaussian of
    sigma 1 around it, offsets to the centre on its pixels only; a crowd pixel and the ignore
    row get no centre target."""
    task = make_task(sigma=1.0)
    pan = torch.zeros(1, 7, 7, dtype=torch.long)
    pan[0, 1:4, 2:5] = 13001
    pan[0, 6, 0] = 13000  # crowd car pixel
    pan[0, 5, :] = IGNORE
    t = task.targets_from_panoptic(pan)
    maps = t.maps
    assert maps["sem_seg"][0, 2, 3] == CAR and maps["sem_seg"][0, 5, 0] == 255
    assert maps["sem_seg"][0, 6, 0] == CAR
    assert maps["center"][0, 2, 3].item() == pytest.approx(1.0)
    assert maps["center"][0, 2, 4].item() == pytest.approx(math.exp(-0.5))
    assert maps["center"][0, 3, 4].item() == pytest.approx(math.exp(-1.0))
    assert maps["offset"][0, :, 1, 2].tolist() == [1.0, 1.0]  # (dy, dx) to (2, 3)
    assert maps["offset"][0, :, 0, 0].tolist() == [0.0, 0.0]
    # Centre target on every labelled non-crowd pixel, offsets on thing instances only.
    assert maps["center_weight"][0].sum().item() == 49 - 7 - 1
    assert maps["offset_weight"][0].sum().item() == 9
    assert maps["pan_seg"] is pan


def test_crowd_regions_place_no_centre_peak():
    """Two crowd car blobs in opposite corners: Detectron2's generator alone would put a peak
    at their joint centre of mass (on road, where the centre weight is 1); ours puts none."""
    task = make_task(sigma=2.0)
    pan = torch.zeros(1, 40, 40, dtype=torch.long)
    pan[0, 0:5, 0:5] = 13000
    pan[0, 35:40, 35:40] = 13000
    maps = task.targets_from_panoptic(pan).maps
    assert maps["center"].max().item() == 0.0
    assert maps["center_weight"][0, 20, 20] == 1 and maps["center_weight"][0, 0, 0] == 0
    assert maps["sem_seg"][0, 0, 0] == CAR and maps["semantic_weight"][0, 0, 0] == 1
    assert maps["offset_weight"].sum() == 0
    ignored = PanopticTask(num_classes=19, settings=PanopticSettings(
        thing_ids=THINGS, sigma=2, ignore_crowd_in_semantic=True))
    assert ignored.targets_from_panoptic(pan).maps["sem_seg"][0, 0, 0] == 255


def test_class_weights_act_on_the_semantic_term_only():
    task = make_task()
    pan = torch.zeros(1, 8, 8, dtype=torch.long)
    pan[0, 2:6, 2:6] = 13001
    targets = task.targets_from_panoptic(pan)
    outputs = {"sem_seg": torch.zeros(1, 19, 8, 8), "center": torch.zeros(1, 1, 8, 8),
               "offset": torch.zeros(1, 2, 8, 8)}
    plain = task.supervised_loss(outputs, targets)
    ce = task.semantic.supervised_loss(outputs, targets.with_weight(
        targets.maps["semantic_weight"]))
    doubled = task.supervised_loss(outputs, targets, class_weight=torch.full((1, 8, 8), 2.0))
    assert doubled.item() == pytest.approx(plain.item() + ce.item(), rel=1e-5)


@pytest.mark.parametrize("bad,message", [
    (dict(nms_kernel=4), "NMS_KERNEL=4"), (dict(sigma=1.5), "GAUSSIAN_SIGMA=1.5"),
    (dict(small_instance_weight=2.5), "SMALL_INSTANCE_WEIGHT=2.5"),
    (dict(stuff_area_reference=(10,)), "STUFF_AREA_REFERENCE_SIZE")])
def test_settings_the_generator_would_take_wrongly_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        PanopticSettings(thing_ids=THINGS, **bad)
    with pytest.raises(ValueError, match="IGNORE_VALUE=300"):
        PanopticTask(num_classes=19, ignore_value=300, settings=PanopticSettings(thing_ids=THINGS))


def test_supervised_loss_is_zero_for_perfect_centres_and_offsets():
    task = make_task()
    pan = torch.zeros(1, 8, 8, dtype=torch.long)
    pan[0, 2:6, 2:6] = 13001
    targets = task.targets_from_panoptic(pan)
    logits = torch.nn.functional.one_hot(targets.maps["sem_seg"], 19).permute(0, 3, 1, 2) * 50.0
    outputs = {"sem_seg": logits.float(), "center": targets.maps["center"][:, None],
               "offset": targets.maps["offset"]}
    assert task.supervised_loss(outputs, targets).item() == pytest.approx(0.0, abs=1e-6)
    outputs["center"] = outputs["center"] + 0.1
    outputs["offset"] = outputs["offset"] + torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    # 200 * 0.01 (every pixel has a centre target) + 0.01 * 3 (instance pixels only).
    assert task.supervised_loss(outputs, targets).item() == pytest.approx(2.0 + 0.03, rel=1e-4)
    # A pixel weight of 0.5 (pseudo-label quality) halves every term.
    half = targets.with_weight(torch.full((1, 8, 8), 0.5))
    assert task.supervised_loss(outputs, half).item() == pytest.approx(1.015, rel=1e-4)


def _teacher_outputs(size=(12, 12)):
    """A teacher that sees a car at rows 2..5, cols 2..5 (centre (3.5, 3.5), score 0.9) and a
    person at rows 7..9, cols 7..9 whose centre scores only 0.2; road elsewhere."""
    h, w = size
    classes = torch.full((h, w), ROAD)
    classes[2:6, 2:6] = CAR
    classes[7:10, 7:10] = PERSON
    logits = torch.nn.functional.one_hot(classes, 19).permute(2, 0, 1).float()[None] * 20
    center = torch.zeros(1, 1, h, w)
    center[0, 0, 3, 3] = 0.9
    center[0, 0, 8, 8] = 0.2
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    offset = torch.stack([3.0 - ys, 3.0 - xs])[None]
    return {"sem_seg": logits, "center": center, "offset": offset}


def test_pseudo_targets_from_the_teachers_post_processed_instances():
    task = make_task(pseudo_center_threshold=0.3)
    teacher = _teacher_outputs()
    pseudo = task.pseudo_targets(teacher, PseudoLabelSettings(threshold=0.9))
    pan = pseudo.maps["pan_seg"][0]
    assert (pan[2:6, 2:6] == 13001).all()
    # The person's centre (0.2) is below the threshold: crowd, no centre or offset target.
    assert (pan[7:10, 7:10] == 11000).all()
    assert pseudo.maps["center_weight"][0, 7:10, 7:10].sum() == 0
    assert pseudo.maps["offset_weight"][0, 2:6, 2:6].sum() == 16
    # The generator's centre is the car's centre of mass (3.5, 3.5), rounded to (4, 4).
    assert pseudo.maps["center"][0, 4, 4].item() == pytest.approx(1.0)
    assert pseudo.quality == pytest.approx(1.0) and pseudo.weight.shape == (1, 12, 12)


def test_mix_regenerates_centres_for_pasted_and_cut_instances():
    task = make_task()
    source_pan = torch.zeros(1, 10, 10, dtype=torch.long)
    source_pan[0, 0:4, 0:4] = 13001          # source car, top left
    target_pan = torch.zeros(1, 10, 10, dtype=torch.long)
    target_pan[0, 4:10, 0:6] = 13001         # target car, partly covered below
    source = task.targets_from_panoptic(source_pan)
    pseudo = task.targets_from_panoptic(target_pan, torch.full((1, 10, 10), 0.25))
    masks = torch.zeros(1, 1, 10, 10)
    masks[0, 0, 0:4, 0:4] = 1.0
    masks[0, 0, 4:6, 0:6] = 1.0              # source road pasted over the car's top rows
    source_pan[0, 4:6, 0:6] = 0
    images, mixed = task.mix(masks, torch.ones(1, 3, 10, 10), torch.zeros(1, 3, 10, 10),
                             task.targets_from_panoptic(source_pan), pseudo)
    pan = mixed.maps["pan_seg"][0]
    assert (pan[0:4, 0:4] == 13002).all() and (pan[6:10, 0:6] == 13001).all()
    assert (pan[4:6, 0:6] == 0).all()
    # The cut target car's centre is the centre of mass of what is left: (7.5, 2.5) -> (8, 3).
    assert mixed.maps["center"][0, 8, 2].item() == pytest.approx(1.0)
    assert mixed.maps["offset"][0, :, 6, 0].tolist() == [1.5, 2.5]
    assert mixed.weight[0, 0, 0].item() == 1.0 and mixed.weight[0, 9, 9].item() == 0.25
    assert images[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    del source


def test_distillation_terms():
    task = make_task()
    teacher = _teacher_outputs()
    student = {k: v.clone().requires_grad_() for k, v in teacher.items()}
    targets = DenseTargets({"sem_seg": teacher["sem_seg"].argmax(1)})
    ones = torch.ones(1, 12, 12)
    assert task.distillation_loss(teacher, student, targets, ones).item() == pytest.approx(0.0,
                                                                                          abs=1e-6)
    shifted = dict(student, center=student["center"] + 0.1,
                   offset=student["offset"] + torch.tensor([1.0, 2.0]).view(1, 2, 1, 1))
    loss = task.distillation_loss(teacher, shifted, targets, ones)
    # λ_c mean((0.1)²) over all pixels + λ_o (1 + 2) on the thing pixels (car and person).
    assert loss.item() == pytest.approx(200 * 0.01 + 0.01 * 3, rel=1e-4)
    loss.backward()
    assert student["offset"].grad is not None


def test_postprocess_two_cars_and_small_stuff():
    task = make_task(stuff_area=2048, stuff_area_reference=(1024, 2048))
    h, w = 12, 12
    classes = torch.full((h, w), ROAD)
    classes[0, :] = SKY
    classes[2:6, 1:5] = CAR
    classes[2:6, 7:11] = CAR
    logits = torch.nn.functional.one_hot(classes, 19).permute(2, 0, 1).float() * 10
    center = torch.zeros(1, h, w)
    center[0, 3, 2] = center[0, 3, 9] = 0.8
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    to_left = torch.stack([3.0 - ys, 2.0 - xs])
    to_right = torch.stack([3.0 - ys, 9.0 - xs])
    offset = torch.where(xs < 6, to_left, to_right)
    out = task.postprocess({"sem_seg": logits, "center": center, "offset": offset}, (h, w), h, w)
    pan, segments = out["panoptic_seg"]
    assert segments is None and out["sem_seg"].shape == (19, h, w)
    assert (pan[2:6, 1:5] == 13001).all() and (pan[2:6, 7:11] == 13002).all()
    assert pan[8, 8].item() == ROAD * L
    # 2048 px at 1024x2048 scales to 0.14 px at 12x12: no stuff is voided here.
    assert pan[0, 0].item() == SKY * L
    big = make_task(stuff_area=20, stuff_area_reference=(12, 12))
    pan = big.postprocess({"sem_seg": logits, "center": center, "offset": offset},
                          (h, w), h, w)["panoptic_seg"][0]
    assert pan[0, 0].item() == -1  # 12 sky pixels < 20: void


def test_offsets_scale_when_resized():
    offset = torch.ones(2, 4, 6)
    out = resize_offsets(offset, (4, 6), 8, 18)
    assert out.shape == (2, 8, 18)
    assert out[0].unique().tolist() == [2.0] and out[1].unique().tolist() == [3.0]
    assert resize_offsets(torch.ones(2, 6, 6), (4, 5), 4, 5).shape == (2, 4, 5)
