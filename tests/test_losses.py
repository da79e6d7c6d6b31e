import math

import pytest
import torch

from duda_d2.uda.losses import weighted_cross_entropy


def test_matches_hand_computed_values_with_weights_and_ignore():
    # Two classes, 1x3 image: logits favour class 0 by log(3) everywhere -> p0 = 3/4.
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 0] = math.log(3.0)
    target = torch.tensor([[[0, 1, 255]]])
    weight = torch.tensor([[[1.0, 0.5, 7.0]]])
    loss = weighted_cross_entropy(logits, target, weight)
    # mmseg's mean over all 3 pixels, the ignored one counting 0:
    # (-log(3/4) * 1 + -log(1/4) * 0.5 + 0) / 3
    expected = (-math.log(0.75) - 0.5 * math.log(0.25)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_logits_are_upsampled_to_the_label_size():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 16, 16))
    loss = weighted_cross_entropy(logits, target)
    loss.backward()
    assert logits.grad.shape == logits.shape and torch.isfinite(loss)


def test_all_ignored_gives_zero_with_a_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0
