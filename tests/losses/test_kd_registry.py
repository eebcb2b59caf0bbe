from __future__ import annotations

import pytest
import torch
from torch import nn

from prokd.losses import FeatureTerm, build_feature_term, feature_terms, pair_features, register_feature_term
from prokd.losses import kd_registry
from prokd.models import build_model, forward_with_features, get_spec

torch.set_num_threads(1)


class MeanGap(FeatureTerm):
    """|mean(student) - mean(teacher)| per pair: a term simple enough to compute by hand."""

    def __init__(self, student_channels, teacher_channels, *, scale: float = 1.0) -> None:
        super().__init__(student_channels, teacher_channels)
        self.scale = scale

    def pair_loss(self, index, student, teacher):
        return self.scale * (student.mean() - teacher.mean()).abs()


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(kd_registry, "_FEATURE_TERMS", {})


def test_the_three_terms_are_registered():
    assert {"hint", "attention", "affinity"} <= set(feature_terms())
    assert feature_terms() == sorted(feature_terms())


def test_register_and_build_a_term(empty_registry):
    assert register_feature_term("mean-gap")(MeanGap) is MeanGap
    assert feature_terms() == ["mean-gap"]
    term = build_feature_term("mean-gap", [1, 2], [3, 1], scale=2.0)
    student = [torch.full((1, 1, 4, 4), 1.0), torch.full((1, 2, 2, 2), 5.0)]
    teacher = [torch.full((1, 3, 2, 2), 4.0), torch.full((1, 1, 8, 8), 4.0)]
    # pairs give 2 * 3 and 2 * 1; the term is their mean
    assert term(student, teacher).item() == pytest.approx(4.0)


def test_registry_errors(empty_registry):
    register_feature_term("mean-gap")(MeanGap)
    with pytest.raises(ValueError, match="already registered"):
        register_feature_term("mean-gap")(MeanGap)
    with pytest.raises(TypeError, match="is not a FeatureTerm"):
        register_feature_term("linear")(nn.Linear)
    with pytest.raises(ValueError, match=r"unknown feature term 'hnit'; registered feature terms: mean-gap"):
        build_feature_term("hnit", [1], [1])
    with pytest.raises(ValueError, match="does not accept size; accepted: scale"):
        build_feature_term("mean-gap", [1], [1], size=3)


def test_registered_terms_list_their_keywords():
    with pytest.raises(ValueError, match="'hint' does not accept grid; accepted: none"):
        build_feature_term("hint", [1], [1], grid=4)
    with pytest.raises(ValueError, match="accepted: grid"):
        build_feature_term("affinity", [1], [1], p=2)
    assert build_feature_term("attention", [1], [1], p=1.0).p == 1.0


def test_teacher_maps_are_detached():
    student = torch.ones(1, 1, 2, 2, requires_grad=True)
    teacher = torch.zeros(1, 1, 2, 2, requires_grad=True)
    MeanGap([1], [1])([student], [teacher]).backward()
    assert teacher.grad is None
    torch.testing.assert_close(student.grad, torch.full((1, 1, 2, 2), 0.25))


def test_map_checks():
    term = MeanGap([1, 2], [3, 4])
    with pytest.raises(ValueError, match="built for 2 pairs, got 1 student and 2 teacher maps"):
        term([torch.zeros(1, 1, 2, 2)], [torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2)])
    with pytest.raises(ValueError, match="pair 1 has 2 student and 5 teacher channels, built for 2 and 4"):
        term([torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2), torch.zeros(1, 5, 2, 2)])
    with pytest.raises(ValueError, match=r"pair 0 maps must be \(B, C, H, W\) with the same B"):
        term([torch.zeros(2, 1, 2, 2), torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2)])
    with pytest.raises(ValueError, match="same nonzero number"):
        MeanGap([1, 2], [3])
    with pytest.raises(ValueError, match="same nonzero number"):
        MeanGap([], [])


def taps(*sides: int) -> list[tuple[int, int, int]]:
    return [(8, side, side) for side in sides]


def test_pair_features_nearest_resolution():
    assert pair_features(taps(16, 8, 4, 2), taps(16, 8, 4, 2)) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert pair_features(taps(16, 8, 4, 2), taps(16, 8, 4)) == [(0, 0), (1, 1), (2, 2)]
    assert pair_features(taps(16, 8, 4), taps(32, 16, 8, 4)) == [(0, 1), (1, 2), (2, 3)]
    # both student taps are nearest to teacher tap 0; the exact match keeps it
    assert pair_features(taps(16, 8), taps(8, 4)) == [(1, 0)]
    # ties go to the shallower tap, on either side
    assert pair_features(taps(8), taps(16, 4)) == [(0, 0)]
    assert pair_features(taps(16, 4), taps(8)) == [(0, 0)]
    # only the area counts, and full (B, C, H, W) shapes are accepted
    assert pair_features([(2, 8, 16, 8)], [(2, 64, 8, 16), (2, 64, 4, 4)]) == [(0, 0)]


def test_pair_features_errors():
    with pytest.raises(ValueError, match="at least one"):
        pair_features([], taps(4))
    with pytest.raises(ValueError, match=r"must end in a positive \(H, W\), got \(8, 0, 4\)"):
        pair_features([(8, 0, 4)], taps(4))


@pytest.mark.parametrize(
    ("teacher_name", "expected_pairs"),
    [
        ("unet-large", [(0, 0), (1, 1), (2, 2), (3, 3)]),
        ("attention-unet", [(0, 0), (1, 1), (2, 2), (3, 3)]),
        ("segresnet", [(0, 0), (1, 1), (2, 2)]),
    ],
)
def test_terms_on_registry_models(teacher_name, expected_pairs):
    torch.manual_seed(0)
    student, teacher = build_model("unet-small"), build_model(teacher_name)
    image = torch.randn(1, 1, 32, 32)
    _, student_maps = forward_with_features(student, image, get_spec("unet-small").default_taps)
    _, teacher_maps = forward_with_features(teacher, image, get_spec(teacher_name).default_taps)
    student_maps, teacher_maps = list(student_maps.values()), list(teacher_maps.values())
    pairs = pair_features([f.shape for f in student_maps], [f.shape for f in teacher_maps])
    assert pairs == expected_pairs
    paired_student = [student_maps[i] for i, _ in pairs]
    paired_teacher = [teacher_maps[j] for _, j in pairs]
    losses = {}
    for name in ("hint", "attention", "affinity"):
        term = build_feature_term(name, [f.shape[1] for f in paired_student], [f.shape[1] for f in paired_teacher])
        losses[name] = term(paired_student, paired_teacher)
    assert all(torch.isfinite(value) and value.item() > 0 for value in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.model[0].parameters())
