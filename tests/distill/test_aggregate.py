"""Multi-teacher aggregation: the registry, each mode's weights (a partition of unity that follows what the mode
reads), no gradient into the teachers, and the arguments a mode reads from the teachers themselves."""

from __future__ import annotations

import math

import pytest
import torch

from prokd.distill import (
    aggregators,
    build_aggregator,
    build_aggregator_for,
    normalised_entropy,
    teacher_measurements,
)
from tests.distill.test_objective import make_teacher

torch.set_num_threads(1)

MODES = {"mean": {}, "weighted": {"scores": [0.8, 0.3, 0.5]}, "site": {"scores": {"A": [0.8, 0.3, 0.5]}},
         "adaptive": {}, "learned": {"in_channels": 2}}


def entropy_bits(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def square(value_inside: float, value_outside: float, size: int = 16, lo: int = 6, hi: int = 10) -> torch.Tensor:
    """(1, 1, size, size) map with ``value_inside`` on rows/cols [lo, hi) and ``value_outside`` elsewhere."""
    out = torch.full((1, 1, size, size), value_outside)
    out[..., lo:hi, lo:hi] = value_inside
    return out


def test_registry_lists_modes_and_rejects_bad_names_and_arguments():
    assert aggregators() == ["adaptive", "agreement", "confidence-max", "entropy", "learned", "mean", "site", "trust",
                             "weighted"]
    with pytest.raises(ValueError, match="unknown aggregator 'median'.*adaptive, agreement, confidence-max, entropy, "
                                         "learned, mean, site, trust, weighted"):
        build_aggregator("median", 2)
    with pytest.raises(ValueError, match=r"unknown arguments \['gamma'\].*accepted: beta, window"):
        build_aggregator("adaptive", 2, gamma=1.0)
    with pytest.raises(ValueError, match=r"missing arguments \['scores'\]"):
        build_aggregator("weighted", 2)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_weights_are_a_partition_of_unity_and_probs_their_weighted_mean(mode):
    torch.manual_seed(0)
    teacher_probs = torch.rand(3, 4, 1, 8, 8)
    label = (torch.rand(4, 1, 8, 8) > 0.5).long()
    labeled = torch.tensor([True, False, True, False])
    aggregator = build_aggregator(mode, 3, **MODES[mode])
    result = aggregator(teacher_probs, label=label, labeled=labeled, image=torch.randn(4, 2, 8, 8))
    assert result.weights.shape == (3, 4, 1, 8, 8) and result.probs.shape == (4, 1, 8, 8)
    assert (result.weights >= 0).all()
    torch.testing.assert_close(result.weights.sum(dim=0), torch.ones(4, 1, 8, 8))
    torch.testing.assert_close(result.probs, (result.weights * teacher_probs).sum(dim=0))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_gradient_reaches_the_teachers(mode):
    teacher_probs = torch.rand(3, 2, 1, 8, 8, requires_grad=True)
    result = build_aggregator(mode, 3, **MODES[mode])(teacher_probs, image=torch.randn(2, 2, 8, 8))
    assert result.probs.requires_grad == (mode == "learned")
    if result.probs.requires_grad:
        result.probs.sum().backward()
    assert teacher_probs.grad is None


def test_mean_of_identical_teachers_is_each_teacher_and_mean_is_the_average():
    teacher = torch.rand(1, 2, 1, 4, 4)
    torch.testing.assert_close(build_aggregator("mean", 3)(teacher.expand(3, -1, -1, -1, -1)).probs, teacher[0])
    two = torch.stack([torch.full((1, 1, 2, 2), 0.2), torch.full((1, 1, 2, 2), 0.6)])
    result = build_aggregator("mean", 2)(two)
    torch.testing.assert_close(result.probs, torch.full((1, 1, 2, 2), 0.4))
    torch.testing.assert_close(result.weights, torch.full((2, 1, 1, 2, 2), 0.5))


@pytest.mark.parametrize(("power", "expected"), [(1.0, (0.75, 0.25)), (2.0, (0.9, 0.1)), (0.0, (0.5, 0.5))])
def test_weighted_follows_the_scores_sharpened_by_the_power(power, expected):
    teachers = torch.stack([torch.full((2, 1, 3, 3), 1.0), torch.full((2, 1, 3, 3), 0.2)])
    result = build_aggregator("weighted", 2, scores=[0.6, 0.2], power=power)(teachers)
    torch.testing.assert_close(result.weights[:, 0, 0, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(result.probs, torch.full((2, 1, 3, 3), expected[0] + 0.2 * expected[1]))


@pytest.mark.parametrize("kwargs", [{"scores": [0.5]}, {"scores": [0.0, 0.0]}, {"scores": [1.0, -0.1]}])
def test_weighted_rejects_bad_scores(kwargs):
    with pytest.raises(ValueError, match="WeightedAggregator"):
        build_aggregator("weighted", 2, **kwargs)


def test_adaptive_labeled_hand_value():
    # y = [1, 0]; teacher 0 = y, teacher 1 = 1 - y. Window 1: pixel agreement 1 vs 0; Dice (2 + 1) / (1 + 1 + 1) = 1
    # vs (0 + 1) / (1 + 1 + 1) = 1/3; reliability 1 vs 1/6, so w_0 = sigmoid(10 * 5/6) at both pixels.
    label = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    teachers = torch.stack([label, 1 - label])
    result = build_aggregator("adaptive", 2, window=1)(teachers, label=label)
    torch.testing.assert_close(result.weights[0], torch.full((1, 1, 1, 2), sigmoid(25 / 3)))


def test_adaptive_trusts_the_teacher_that_matches_the_label_where_there_is_one():
    label = square(1.0, 0.0)
    right = square(0.9, 0.1)
    wrong = square(0.2, 0.7, lo=2, hi=12)
    teachers = torch.stack([wrong, right, wrong]).expand(-1, 2, -1, -1, -1)
    labels = label.expand(2, -1, -1, -1)
    result = build_aggregator("adaptive", 3)(teachers, label=labels, labeled=torch.tensor([True, False]))
    assert result.weights[1, 0].min() > 0.8
    unlabeled = build_aggregator("adaptive", 3)(teachers[:, 1:])
    torch.testing.assert_close(result.weights[:, 1:], unlabeled.weights)
    assert result.weights[1, 1].max() < 0.8


def test_adaptive_prefers_a_confident_teacher_to_a_confused_one():
    # Equal consensus (|0.95 - 0.5| either way); confidence 1 - H(0.95) vs 0, locally and per image.
    confident, confused = square(0.95, 0.05), torch.full((1, 1, 16, 16), 0.5)
    result = build_aggregator("adaptive", 2)(torch.stack([confident, confused]))
    expected = sigmoid(10 * 2 / 3 * (1 - entropy_bits(0.95)))
    torch.testing.assert_close(result.weights[0], torch.full((1, 1, 16, 16), expected))
    assert expected > 0.99


def test_adaptive_down_weights_a_lone_dissenter_where_it_dissents():
    # Inside the square the dissenter says 0.1 against 0.9: its consensus is 1 - |0.1 - 0.9| = 0.2, the others'
    # 1 - |0.9 - (0.9 + 0.9 + 0.1) / 3| = 11/15; confidences are equal. Pixel (8, 8) sees only the square through
    # the 7x7 window, pixel (23, 23) only the background, where all four agree.
    agreeing, dissenter = square(0.9, 0.1, size=24, lo=2, hi=14), torch.full((1, 1, 24, 24), 0.1)
    result = build_aggregator("adaptive", 4)(torch.stack([agreeing, agreeing, agreeing, dissenter]))
    ratio = math.exp(10 * (11 / 15 - 0.2) / 3)
    torch.testing.assert_close(result.weights[3, 0, 0, 8, 8], torch.tensor(1 / (1 + 3 * ratio)))
    assert result.weights[3, 0, 0, 5:12, 5:12].max() < 0.1
    torch.testing.assert_close(result.weights[:, 0, 0, 23, 23], torch.full((4,), 0.25))


def test_adaptive_image_confidence_down_weights_a_confused_teacher_everywhere_on_the_image():
    # The confused teacher is 0.5 on the 4x4 prostate and agrees (0.05) on the background. At a far corner its
    # local terms equal the other's, but its confidence over the candidate foreground m = max_k p_k is lower:
    # C = 1 - H(0.95) for the sure teacher, (240 * 0.05 * (1 - H(0.05))) / (16 * 0.95 + 240 * 0.05) for the other.
    sure, confused = square(0.95, 0.05), square(0.5, 0.05)
    result = build_aggregator("adaptive", 2)(torch.stack([sure, confused]))
    confidence = 1 - entropy_bits(0.95)
    image_gap = confidence - 240 * 0.05 * confidence / (16 * 0.95 + 240 * 0.05)
    torch.testing.assert_close(result.weights[0, 0, 0, 0, 0], torch.tensor(sigmoid(10 * image_gap / 3)))
    assert result.weights[0, 0, 0, 0, 0] > 0.75


def test_adaptive_local_mean_is_the_border_clipped_box_mean():
    maps = torch.rand(3, 2, 1, 9, 11)
    local = build_aggregator("adaptive", 3, window=5).local_mean(maps)
    assert local.shape == maps.shape
    # corner pixel: the window is clipped to the 3 x 3 block of rows/cols 0..2
    torch.testing.assert_close(local[1, 0, 0, 0, 0], maps[1, 0, 0, :3, :3].mean())
    torch.testing.assert_close(local[2, 1, 0, 4, 5], maps[2, 1, 0, 2:7, 3:8].mean())
    torch.testing.assert_close(local[0, 1, 0, 8, 6], maps[0, 1, 0, 6:9, 4:9].mean())


def test_site_weights_follow_each_teacher_score_on_the_sample_site():
    scores = {"A": [0.8, 0.4], "B": [0.2, 0.6], "C": [0.0, 0.0]}
    aggregator = build_aggregator("site", 2, scores=scores)  # power 4
    teacher_probs = torch.rand(2, 4, 1, 3, 3)
    result = aggregator(teacher_probs, sites=["A", "B", "C", "elsewhere"])
    first = result.weights[0, :, 0, 0, 0]
    # A: 0.8^4 / (0.8^4 + 0.4^4); B: 0.2^4 / (0.2^4 + 0.6^4); C: nobody scores, uniform; unknown: mean scores
    expected = torch.tensor([0.4096 / 0.4352, 0.0016 / 0.1312, 0.5, 0.5**4 / (0.5**4 + 0.5**4)])
    torch.testing.assert_close(first, expected)
    assert (result.weights == result.weights[:, :, :, :1, :1]).all()  # the same weight at every pixel
    torch.testing.assert_close(build_aggregator("site", 2, scores=scores, power=1.0)(teacher_probs, sites=["A"] * 4)
                               .weights[0, 0, 0, 0, 0], torch.tensor(0.8 / 1.2))
    no_sites = aggregator(teacher_probs).weights[0, :, 0, 0, 0]  # every sample from an unknown site
    torch.testing.assert_close(no_sites, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="3 sites for 4 samples"):
        aggregator(teacher_probs, sites=["A", "B", "C"])
    with pytest.raises(ValueError, match="site 'A' needs 2 finite scores"):
        build_aggregator("site", 2, scores={"A": [0.5]})
    with pytest.raises(ValueError, match="at least one site"):
        build_aggregator("site", 2, scores={})


def test_adaptive_rejects_bad_settings():
    with pytest.raises(ValueError, match="window must be an odd number"):
        build_aggregator("adaptive", 2, window=4)
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        build_aggregator("adaptive", 2, beta=0.0)


def test_inputs_are_checked():
    aggregator = build_aggregator("mean", 2)
    with pytest.raises(ValueError, match=r"teacher_probs must be \(K=2, B, 1, H, W\), got \(3, 1, 1, 4, 4\)"):
        aggregator(torch.rand(3, 1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"label must be \(1, 1, 4, 4\)"):
        aggregator(torch.rand(2, 1, 1, 4, 4), label=torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="no label was given"):
        aggregator(torch.rand(2, 1, 1, 4, 4), labeled=torch.tensor([True]))
    with pytest.raises(ValueError, match=r"image must be \(1, C, 4, 4\)"):
        aggregator(torch.rand(2, 1, 1, 4, 4), image=torch.zeros(1, 1, 4, 3))
    with pytest.raises(ValueError, match="needs an image with 1 channels, got None"):
        build_aggregator("learned", 2)(torch.rand(2, 1, 1, 4, 4))


def test_normalised_entropy_hand_values():
    probs = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(normalised_entropy(probs), torch.tensor([0.0, entropy_bits(0.25), 1.0, 0.0]))


def test_build_aggregator_for_reads_each_modes_arguments_from_the_teachers():
    first, second = make_teacher(seed=0), make_teacher(seed=1)
    first.score, second.score = 0.8, 0.4
    first.site_scores, second.site_scores = {"A": 0.9, "B": 0.2}, {"A": 0.3}
    first.site_trust, second.site_trust = {"A": 0.5}, {"A": 0.7}
    teachers = [first, second]
    weighted = build_aggregator_for("weighted", teachers, in_channels=1)
    torch.testing.assert_close(weighted.teacher_share, torch.tensor([2 / 3, 1 / 3]))
    site = build_aggregator_for("site", teachers, in_channels=1, power=1.0)
    assert site.sites == ["A", "B"]
    torch.testing.assert_close(site.site_share[:2], torch.tensor([[0.75, 0.25], [1 / 3, 2 / 3]]))  # B: 0.4 overall
    trust = build_aggregator_for("trust", teachers, in_channels=1, power=1.0)
    torch.testing.assert_close(trust.site_share[0], torch.tensor([5 / 12, 7 / 12]))
    assert build_aggregator_for("learned", teachers, in_channels=3).in_channels == 3
    given = build_aggregator_for("weighted", teachers, in_channels=1, scores=[1.0, 3.0])
    torch.testing.assert_close(given.teacher_share, torch.tensor([0.25, 0.75]))


def test_build_aggregator_for_names_the_teacher_that_lacks_a_score():
    scored, unscored = make_teacher(seed=0), make_teacher(seed=1)
    unscored.name, unscored.score = "site-X", None
    with pytest.raises(ValueError, match="site-X"):
        build_aggregator_for("weighted", [scored, unscored], in_channels=1)
    with pytest.raises(ValueError, match="trust aggregation"):
        build_aggregator_for("trust", [scored, unscored], in_channels=1)


def test_teacher_measurements_names_what_each_mode_needs_measured_unless_given():
    assert teacher_measurements("site", {}) == {"site_scores"}
    assert teacher_measurements("trust", {"power": 8.0}) == {"site_trust"}
    assert teacher_measurements("trust", {"scores": {"A": [0.5, 0.7]}}) == frozenset()
    assert all(teacher_measurements(name, {}) == frozenset() for name in ("mean", "weighted", "adaptive", "learned"))
    with pytest.raises(ValueError, match="unknown aggregator 'nope'"):
        teacher_measurements("nope", {})
