from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prokd.losses import boundary_weights, foreground_logit, kl_distillation, soft_foreground, uncertainty_weights

torch.set_num_threads(1)


def two_channel(foreground: torch.Tensor, background: float = 0.7) -> torch.Tensor:
    """(B, 1, H, W) logit d -> (B, 2, H, W) logits (b, b + d), which give the same foreground probability."""
    return torch.cat([torch.full_like(foreground, background), foreground + background], dim=1)


def bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


# student q = [1/2, 3/4] at T = 2 (logits 2 * [0, ln 3]); teacher p = [1/4, 1/2]
STUDENT_AT_T2 = torch.tensor([0.0, 2 * math.log(3)]).reshape(1, 1, 1, 2)
TEACHER = torch.tensor([0.25, 0.5]).reshape(1, 1, 1, 2)
PIXEL_KL = [bernoulli_kl(0.25, 0.5), bernoulli_kl(0.5, 0.75)]


@pytest.mark.parametrize("channels", [1, 2])
def test_hand_value_on_two_pixels(channels):
    student = STUDENT_AT_T2 if channels == 1 else two_channel(STUDENT_AT_T2)
    value = kl_distillation(student, TEACHER, temperature=2.0)
    assert value.item() == pytest.approx(4 * (PIXEL_KL[0] + PIXEL_KL[1]) / 2, abs=1e-6)


def test_weight_map_gives_the_weighted_mean():
    value = kl_distillation(STUDENT_AT_T2, TEACHER, 2.0, weight_map=torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2))
    assert value.item() == pytest.approx(4 * (PIXEL_KL[0] + 3 * PIXEL_KL[1]) / 4, abs=1e-6)
    only_first = kl_distillation(STUDENT_AT_T2, TEACHER, 2.0, weight_map=torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2))
    assert only_first.item() == pytest.approx(4 * PIXEL_KL[0], abs=1e-6)
    nothing = kl_distillation(STUDENT_AT_T2, TEACHER, 2.0, weight_map=torch.zeros(1, 1, 1, 2))
    assert nothing.item() == 0.0


@pytest.mark.parametrize("channels", [1, 2])
def test_zero_when_student_equals_teacher_even_when_saturated(channels):
    torch.manual_seed(0)
    logits = 4 * torch.randn(2, channels, 4, 4)
    logits[0, -1, 0, :2] = torch.tensor([40.0, -40.0])
    for temperature in (1.0, 3.0):
        value = kl_distillation(logits, soft_foreground(logits, temperature), temperature)
        assert torch.isfinite(value) and abs(value.item()) < 1e-6


def test_temperature_squared_scaling():
    torch.manual_seed(1)
    student, teacher = 3 * torch.randn(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    scaled = kl_distillation(student, teacher, temperature=4.0)
    assert scaled.item() == pytest.approx(16 * kl_distillation(student / 4, teacher, temperature=1.0).item(), rel=1e-5)


def test_gradient_reaches_the_student_only_with_the_analytic_value():
    torch.manual_seed(2)
    student = torch.randn(2, 1, 3, 3, requires_grad=True)
    teacher_logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    temperature = 2.5
    teacher = soft_foreground(teacher_logits, temperature)
    kl_distillation(student, teacher, temperature).backward()
    assert teacher_logits.grad is None
    # d/dz of T² mean KL(p || sigmoid(z / T)) = T (q - p) / N
    expected = temperature * (torch.sigmoid(student.detach() / temperature) - teacher.detach()) / student.numel()
    torch.testing.assert_close(student.grad, expected)


def test_two_channel_student_equals_the_softmax_kl_and_the_one_channel_form():
    torch.manual_seed(3)
    student, teacher = 3 * torch.randn(2, 2, 4, 4), 3 * torch.randn(2, 2, 4, 4)
    temperature = 2.0
    p = (teacher / temperature).softmax(dim=1)
    reference = temperature**2 * F.kl_div((student / temperature).log_softmax(dim=1), p, reduction="sum") / (2 * 16)
    two = kl_distillation(student, soft_foreground(teacher, temperature), temperature)
    one = kl_distillation(student[:, 1:] - student[:, :1], soft_foreground(teacher, temperature), temperature)
    assert two.item() == pytest.approx(reference.item(), rel=1e-6)
    assert one.item() == pytest.approx(reference.item(), rel=1e-6)


def test_soft_foreground_for_one_and_two_channels():
    d = torch.tensor([-3.0, 0.0, 1.0, 5.0]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(soft_foreground(d, 2.0), torch.sigmoid(d / 2))
    torch.testing.assert_close(soft_foreground(two_channel(d), 2.0), (two_channel(d) / 2).softmax(dim=1)[:, 1:])
    torch.testing.assert_close(foreground_logit(two_channel(d)), d)
    with pytest.raises(ValueError, match=r"logits must be \(B, 1, H, W\) or \(B, 2, H, W\)"):
        soft_foreground(torch.zeros(1, 3, 2, 2), 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        soft_foreground(d, 0.0)


def test_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"teacher_foreground must have shape \(1, 1, 1, 2\)"):
        kl_distillation(STUDENT_AT_T2, TEACHER.reshape(1, 1, 2, 1), 1.0)
    with pytest.raises(ValueError, match="weight_map must have shape"):
        kl_distillation(STUDENT_AT_T2, TEACHER, 1.0, weight_map=torch.ones(1, 2, 1, 2))
    with pytest.raises(ValueError, match="temperature"):
        kl_distillation(STUDENT_AT_T2, TEACHER, -1.0)


def test_uncertainty_weights_keep_the_open_interval():
    p = torch.tensor([0.01, 0.05, 0.5, 0.9, 0.96]).reshape(1, 1, 1, 5)
    assert uncertainty_weights(p).flatten().tolist() == [0, 0, 1, 1, 0]
    assert uncertainty_weights(p, low=0.4, high=0.6).flatten().tolist() == [0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="low < high"):
        uncertainty_weights(p, low=0.6, high=0.4)


def test_boundary_weights_band_of_width_on_each_side():
    row = torch.tensor([0, 0, 0, 1, 1, 1, 1]).reshape(1, 1, 1, 7)
    assert boundary_weights(row, 1).flatten().tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert boundary_weights(row.bool(), 2).flatten().tolist() == [0, 1, 1, 1, 1, 0, 0]
    square = torch.zeros(1, 1, 5, 5)
    square[..., 1:4, 1:4] = 1
    expected = torch.ones(1, 1, 5, 5)
    expected[..., 2, 2] = 0
    torch.testing.assert_close(boundary_weights(square, 1), expected)
    assert boundary_weights(torch.ones(1, 1, 4, 4), 1).sum() == 0
    with pytest.raises(ValueError, match="width_px"):
        boundary_weights(row, 0)
    with pytest.raises(ValueError, match=r"mask must be \(B, 1, H, W\)"):
        boundary_weights(row[0], 1)
