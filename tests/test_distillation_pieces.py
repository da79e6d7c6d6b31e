"""DUDA's schedule, KD, inconsistency weights and multi-teacher pseudo-labels, by hand."""
import math

import pytest
import torch

from duda_d2.uda.distill import (InconsistencyWeights, class_disagreement, label_weights,
                                 pixel_kl, weighted_kd)
from duda_d2.uda.schedule import distill_beta


@pytest.mark.parametrize("schedule,values", [
    ("linear", [0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0]),
    ("cosine", [0.0, 0.0, 0.0, 0.5 * (1 - math.cos(math.pi / 4)), 0.5, 1.0, 1.0]),
    ("constant", [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_beta_is_zero_in_pre_adaptation_then_ramps(schedule, values):
    iterations = [0, 9, 10, 11, 12, 14, 100]
    got = [distill_beta(t, 10, 4, 1.0, schedule) for t in iterations]
    assert got == pytest.approx(values)
    with pytest.raises(ValueError, match="step"):
        distill_beta(0, 1, 1, schedule="step")


def test_pixel_kl_matches_hand_computation_with_temperature():
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # p = (3/4, 1/4) at τ=1
    student = torch.zeros(1, 2, 1, 1)                               # q = (1/2, 1/2)
    kl = pixel_kl(teacher, student, 1.0).item()
    assert kl == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # τ = 2: p = softmax(log3/2, 0) = (√3, 1)/(√3 + 1); scaled by τ² = 4
    p = torch.tensor([math.sqrt(3), 1.0]) / (math.sqrt(3) + 1)
    expected = 4 * float((p * (p / 0.5).log()).sum())
    assert pixel_kl(teacher, student, 2.0).item() == pytest.approx(expected, rel=1e-5)
    assert pixel_kl(student, student).abs().max() < 1e-7


def test_weighted_kd_weights_pixels_and_only_the_student_gets_gradients():
    teacher = torch.randn(1, 3, 2, 2, requires_grad=True)
    student = torch.randn(1, 3, 2, 2, requires_grad=True)
    w = torch.tensor([[[1.0, 0.0], [2.0, 1.0]]])
    loss = weighted_kd(teacher, student, w)
    assert loss.item() == pytest.approx(float((w * pixel_kl(teacher, student)).mean().detach()))
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_label_weights_index_classes_and_give_one_to_ignored():
    c = torch.tensor([0.5, 2.0, 1.0])
    assert label_weights(c, torch.tensor([[0, 1, 255, 2]])).tolist() == [[0.5, 2.0, 1.0, 1.0]]


def test_disagreement_is_one_minus_iou():
    pred = torch.tensor([[0, 0, 1, 1]])
    ref = torch.tensor([[0, 1, 1, 255]])
    u, present = class_disagreement(pred, ref, 3)
    # class 0: inter 1, union 2 -> 0.5; class 1: inter 1, union 2 -> 0.5; class 2 absent
    assert u[:2].tolist() == pytest.approx([0.5, 0.5]) and present.tolist() == [True, True, False]


def test_inconsistency_weights_follow_the_formula_with_ema_clip_and_renorm():
    state = InconsistencyWeights(4, gamma=1.0, momentum=0.5, clip=(0.5, 3.0))
    assert set(state.state_dict()) == {"disagreement", "seen"}  # its own checkpointed state
    assert state.weights().tolist() == [1.0] * 4  # nothing seen yet
    # batch 1: class 0 perfect (u=0), class 1 half (u=0.5 ... computed below), class 2 wrong.
    pred = torch.tensor([[0, 0, 1, 1, 1, 1]])
    ref = torch.tensor([[0, 0, 1, 1, 2, 2]])
    state.update(pred, ref)
    # u0 = 0, u1 = 1 - 2/4 = 0.5, u2 = 1 - 0/2 = 1; mean 0.5
    assert state.disagreement[:3].tolist() == pytest.approx([0.0, 0.5, 1.0])
    raw = torch.tensor([1 + (0 / 0.5 - 1), 1 + (0.5 / 0.5 - 1), 1 + (1 / 0.5 - 1)])
    raw = raw.clamp(0.5, 3.0)                     # class 0: 0 -> 0.5
    expected = raw / raw.mean()
    got = state.weights()
    assert got[:3].tolist() == pytest.approx(expected.tolist())
    assert got[3] == 1.0                            # never seen
    assert got[2] > got[1] > got[0]
    # batch 2: everything right -> u moves half-way to 0 (momentum 0.5) for present classes
    state.update(ref, ref)
    assert state.disagreement[:3].tolist() == pytest.approx([0.0, 0.25, 0.5])
    off = InconsistencyWeights(4, gamma=0.0)
    off.load_state_dict(state.state_dict())
    assert not off.enabled and off.weights().tolist() == [1.0] * 4


def test_pseudo_labels_from_several_teachers_use_the_weighted_mean_probability():
    from duda_d2.uda.pseudo_label import ensemble_logits, pseudo_labels

    a = torch.tensor([math.log(0.9), math.log(0.1)]).view(1, 2, 1, 1)  # says class 0
    b = torch.tensor([math.log(0.2), math.log(0.8)]).view(1, 2, 1, 1)  # says class 1
    mixed = ensemble_logits([a, b], [1.0, 3.0])  # p0 = (0.9 + 3 * 0.2) / 4 = 0.375
    torch.testing.assert_close(torch.softmax(mixed, 1).view(-1), torch.tensor([0.375, 0.625]))
    out = pseudo_labels(mixed, threshold=0.6)
    assert out.labels.item() == 1 and out.quality == 1.0
    assert pseudo_labels(ensemble_logits([a, b], [1.0, 0.0]), 0.6).labels.item() == 0
