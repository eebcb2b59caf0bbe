from __future__ import annotations

import math

import pytest
import torch

from prokd.config import LossConfig
from prokd.losses import SegmentationLoss, probabilities


def two_channel(foreground_logits: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) logit d -> (B, 2, H, W) logits (0, d), which give the same foreground probability."""
    return torch.cat([torch.zeros_like(foreground_logits), foreground_logits], dim=1)


TARGET = torch.tensor([[1, 1], [0, 0], [1, 0], [0, 0]], dtype=torch.float32).reshape(2, 1, 2, 2)


@pytest.mark.parametrize("out_channels", [1, 2])
def test_dice_hand_value_uses_the_whole_batch(out_channels):
    # p = 0.5 everywhere, 3 foreground pixels of 8 in the batch: 1 - (2 * 1.5 + s) / (4 + 3 + s)
    logits = torch.zeros(2, out_channels, 2, 2)
    _, terms = SegmentationLoss(out_channels, dice=1.0, lovasz=0.0, ce=0.0)(logits, TARGET)
    assert terms == {"dice": pytest.approx(1 - (3 + 1e-5) / (7 + 1e-5), abs=1e-6)}


@pytest.mark.parametrize("out_channels", [1, 2])
def test_cross_entropy_hand_value(out_channels):
    _, terms = SegmentationLoss(out_channels, dice=0.0, lovasz=0.0, ce=1.0)(torch.zeros(2, out_channels, 2, 2), TARGET)
    assert terms == {"ce": pytest.approx(math.log(2), abs=1e-6)}


def test_lovasz_hinge_hand_value():
    # errors 1 - σs = [-1, 1.5, 1.25, -2]; Jaccard increments 1/2, 1/6 -> 1.5/2 + 1.25/6
    logits = torch.tensor([2.0, -0.5, 0.25, -3.0]).reshape(1, 1, 1, 4)
    target = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 1, 4)
    _, terms = SegmentationLoss(1, dice=0.0, lovasz=1.0, ce=0.0)(logits, target)
    assert terms == {"lovasz": pytest.approx(23 / 24, abs=1e-6)}


def test_lovasz_softmax_hand_value():
    # p1 = [0.9, 0.4, 0.3, 0.2]: class 1 gives 47/120, class 0 gives 44/120
    p = torch.tensor([0.9, 0.4, 0.3, 0.2])
    logits = two_channel(torch.log(p / (1 - p)).reshape(1, 1, 1, 4))
    target = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 1, 4)
    _, terms = SegmentationLoss(2, dice=0.0, lovasz=1.0, ce=0.0)(logits, target)
    assert terms == {"lovasz": pytest.approx(91 / 240, abs=1e-6)}


def test_total_is_the_weighted_sum_of_the_terms():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 2, 2)
    total, terms = SegmentationLoss(1, dice=0.5, lovasz=2.0, ce=1.0)(logits, TARGET)
    assert set(terms) == {"dice", "lovasz", "ce"}
    assert total.item() == pytest.approx(0.5 * terms["dice"] + 2.0 * terms["lovasz"] + terms["ce"], abs=1e-6)


def test_two_channels_match_one_channel_for_dice_and_cross_entropy():
    torch.manual_seed(1)
    logits = 3 * torch.randn(2, 1, 2, 2)
    _, one = SegmentationLoss(1, dice=1.0, lovasz=0.0, ce=1.0)(logits, TARGET)
    _, two = SegmentationLoss(2, dice=1.0, lovasz=0.0, ce=1.0)(two_channel(logits), TARGET)
    assert two == {name: pytest.approx(value, abs=1e-6) for name, value in one.items()}


@pytest.mark.parametrize("out_channels", [1, 2])
def test_perfect_logits_give_near_zero_loss(out_channels):
    loss = SegmentationLoss(out_channels, dice=1.0, lovasz=1.0, ce=1.0)
    perfect = 10.0 * (2 * TARGET - 1)
    logits = perfect if out_channels == 1 else torch.cat([-perfect / 2, perfect / 2], dim=1)
    total, terms = loss(logits, TARGET)
    assert all(value < 1e-3 for value in terms.values()) and total.item() < 3e-3
    _, uninformed = loss(torch.zeros(2, out_channels, 2, 2), TARGET)
    assert all(value > 0.3 for value in uninformed.values())


@pytest.mark.parametrize("out_channels", [1, 2])
def test_gradients_flow(out_channels):
    torch.manual_seed(2)
    logits = torch.randn(2, out_channels, 8, 8, requires_grad=True)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    total, _ = SegmentationLoss(out_channels, dice=1.0, lovasz=1.0, ce=1.0)(logits, target)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_lovasz_warmup_ramps_the_lovasz_weight_linearly():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 2, 2)
    loss = SegmentationLoss(1, dice=0.5, lovasz=2.0, ce=1.0, lovasz_warmup=0.4)
    for progress, ramp in [(0.0, 0.0), (0.1, 0.25), (0.4, 1.0), (0.9, 1.0)]:
        loss.set_progress(progress)
        total, terms = loss(logits, TARGET)
        expected = 0.5 * terms["dice"] + 2.0 * ramp * terms["lovasz"] + terms["ce"]
        assert total.item() == pytest.approx(expected, abs=1e-6)
        assert terms["lovasz"] > 0.1  # logged unweighted, whatever the ramp


def test_from_config_keeps_only_positive_weights():
    loss = SegmentationLoss.from_config(LossConfig(dice=0.0, lovasz=1.0, ce=0.5), out_channels=2)
    assert loss.out_channels == 2 and loss.weights == {"lovasz": 1.0, "ce": 0.5}
    _, terms = loss(torch.zeros(2, 2, 2, 2), TARGET)
    assert set(terms) == {"lovasz", "ce"}


def test_rejects_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="out_channels"):
        SegmentationLoss(3)
    with pytest.raises(ValueError, match="weights"):
        SegmentationLoss(1, dice=0.0, lovasz=0.0, ce=0.0)
    with pytest.raises(ValueError, match="weights"):
        SegmentationLoss(1, dice=-1.0)
    with pytest.raises(ValueError, match="lovasz_warmup"):
        SegmentationLoss(1, lovasz_warmup=1.0)
    with pytest.raises(ValueError, match=r"logits must be \(B, 2, H, W\)"):
        SegmentationLoss(2)(torch.zeros(2, 1, 2, 2), TARGET)
    with pytest.raises(ValueError, match="target must be"):
        SegmentationLoss(1)(torch.zeros(2, 1, 2, 2), TARGET[:, 0])


def test_probabilities_for_one_and_two_channels():
    d = torch.tensor([-2.0, 0.0, 1.0, 3.0]).reshape(1, 1, 2, 2)
    expected = 1 / (1 + torch.exp(-d))
    torch.testing.assert_close(probabilities(d), expected)
    torch.testing.assert_close(probabilities(two_channel(d) + 0.7), expected)
    assert probabilities(two_channel(d)).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="probabilities"):
        probabilities(torch.zeros(1, 3, 2, 2))
