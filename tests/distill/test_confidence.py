from __future__ import annotations

import math

import pytest
import torch

from prokd.distill import build_aggregator

torch.set_num_threads(1)

MODES = ("entropy", "confidence-max", "agreement")


def entropy_bits(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def constant(*values: float, size: int = 4) -> torch.Tensor:
    """(K, 1, 1, size, size) teachers, teacher k at ``values[k]`` everywhere."""
    return torch.stack([torch.full((1, 1, size, size), value) for value in values])


@pytest.mark.parametrize("mode", MODES)
def test_weights_are_a_partition_of_unity_also_at_ties_and_extremes(mode):
    torch.manual_seed(0)
    teacher_probs = torch.rand(3, 2, 1, 8, 8)
    teacher_probs[2, :, :, :4] = teacher_probs[0, :, :, :4]  # exact ties
    teacher_probs[:, 0, :, 6] = torch.tensor([0.0, 1.0, 0.5]).view(3, 1, 1)  # certain both ways, and undecided
    result = build_aggregator(mode, 3)(teacher_probs)
    assert result.weights.shape == (3, 2, 1, 8, 8)
    assert (result.weights >= 0).all()
    torch.testing.assert_close(result.weights.sum(dim=0), torch.ones(2, 1, 8, 8))
    torch.testing.assert_close(result.probs, (result.weights * teacher_probs).sum(dim=0))


def test_entropy_gives_the_more_confident_teacher_more_weight_by_exp_of_beta_times_the_entropy_gap():
    result = build_aggregator("entropy", 2, beta=3.0)(constant(0.95, 0.6))
    expected = sigmoid(3.0 * (entropy_bits(0.6) - entropy_bits(0.95)))
    torch.testing.assert_close(result.weights[0], torch.full((1, 1, 4, 4), expected))
    assert expected > 0.5
    sure_of_background = build_aggregator("entropy", 2, beta=3.0)(constant(0.05, 0.6))
    torch.testing.assert_close(sure_of_background.weights, result.weights)  # confidence, not the class, counts


def test_entropy_smooths_the_entropy_over_the_window():
    # Teacher 1 is undecided (H = 1) except at pixel (2, 2), where it is certain (H = 0); teacher 0 is at H(0.9)
    # everywhere. With a 3x3 window teacher 1's entropy at (2, 2) is 8/9, at (4, 4) still 1; without, 0 at (2, 2).
    unsure = torch.full((1, 1, 5, 5), 0.5)
    unsure[..., 2, 2] = 1.0
    teachers = torch.stack([torch.full((1, 1, 5, 5), 0.9), unsure])
    smoothed = build_aggregator("entropy", 2, beta=4.0, window=3)(teachers).weights[1, 0, 0]
    torch.testing.assert_close(smoothed[2, 2], torch.tensor(sigmoid(4.0 * (entropy_bits(0.9) - 8 / 9))))
    torch.testing.assert_close(smoothed[4, 4], torch.tensor(sigmoid(4.0 * (entropy_bits(0.9) - 1))))
    sharp = build_aggregator("entropy", 2, beta=4.0)(teachers).weights[1, 0, 0]
    torch.testing.assert_close(sharp[2, 2], torch.tensor(sigmoid(4.0 * entropy_bits(0.9))))


def test_confidence_max_gives_all_weight_to_the_most_confident_teacher_at_each_pixel():
    first = torch.tensor([[0.9, 0.4], [0.2, 0.55]])
    second = torch.tensor([[0.7, 0.1], [0.3, 0.5]])
    teachers = torch.stack([first, second]).view(2, 1, 1, 2, 2)
    result = build_aggregator("confidence-max", 2)(teachers)
    winner_is_first = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(result.weights, torch.stack([winner_is_first, 1 - winner_is_first]))
    torch.testing.assert_close(result.probs, torch.tensor([[0.9, 0.1], [0.2, 0.55]]).view(1, 1, 2, 2))


def test_confidence_max_splits_exact_ties_equally():
    result = build_aggregator("confidence-max", 3)(constant(0.75, 0.25, 0.6))  # |p - 0.5|: 0.25, 0.25, 0.1
    torch.testing.assert_close(result.weights[:, 0, 0, 0, 0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(result.probs, torch.full((1, 1, 4, 4), 0.5))


def test_agreement_is_the_plain_mean_where_votes_agree_and_entropy_weights_where_they_differ():
    # Columns 0-1: both vote foreground (0.9, 0.6); column 2: both background (0.5 votes background, 0.2);
    # column 3: the votes differ (0.9 against 0.3).
    first = torch.tensor([0.9, 0.9, 0.5, 0.9]).expand(4, 4)
    second = torch.tensor([0.6, 0.6, 0.2, 0.3]).expand(4, 4)
    teachers = torch.stack([first, second]).view(2, 1, 1, 4, 4)
    result = build_aggregator("agreement", 2, beta=2.0)(teachers)
    torch.testing.assert_close(result.weights[..., :3], torch.full((2, 1, 1, 4, 3), 0.5))
    torch.testing.assert_close(result.probs[..., :3], ((first + second) / 2)[:, :3].view(1, 1, 4, 3))
    entropy = build_aggregator("entropy", 2, beta=2.0)(teachers)
    torch.testing.assert_close(result.weights[..., 3], entropy.weights[..., 3])
    assert (result.weights[0, ..., 3] > 0.5).all()  # 0.9 is surer than 0.3


def test_agreement_smooths_the_entropy_over_the_whole_image():
    torch.manual_seed(1)
    teachers = torch.rand(3, 2, 1, 9, 9)
    result = build_aggregator("agreement", 3, window=5)(teachers)
    votes = teachers > 0.5
    differ = ~(votes == votes[:1]).all(dim=0)
    assert differ.any() and not differ.all()
    entropy = build_aggregator("entropy", 3, window=5)(teachers).weights
    torch.testing.assert_close(result.weights[:, differ], entropy[:, differ])
    torch.testing.assert_close(result.weights[:, ~differ], torch.full_like(result.weights[:, ~differ], 1 / 3))


def test_one_teacher_always_weighs_one():
    teacher = torch.rand(1, 2, 1, 6, 6)
    for mode in MODES:
        torch.testing.assert_close(build_aggregator(mode, 1)(teacher).weights, torch.ones_like(teacher))


@pytest.mark.parametrize(
    ("mode", "kwargs", "message"),
    [
        ("entropy", {"beta": 0.0}, "EntropyAggregator: beta must be finite and > 0, got 0.0"),
        ("entropy", {"beta": math.inf}, "beta must be finite and > 0"),
        ("entropy", {"window": 4}, "EntropyAggregator: window must be an odd number >= 1, got 4"),
        ("agreement", {"window": 0}, "AgreementAggregator: window must be an odd number >= 1, got 0"),
        ("agreement", {"beta": -1.0}, "AgreementAggregator: beta must be finite and > 0"),
        ("confidence-max", {"beta": 2.0}, r"unknown arguments \['beta'\].*accepted: none"),
    ],
)
def test_bad_arguments_raise(mode, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_aggregator(mode, 2, **kwargs)


def test_no_teachers_raise():
    with pytest.raises(ValueError, match="n_teachers must be >= 1, got 0"):
        build_aggregator("confidence-max", 0)
