"""The learned gate (``learned`` aggregation): its loss, its start as the plain mean, and that it learns which
teacher to trust where."""

from __future__ import annotations

import math

import pytest
import torch

from prokd.distill import AggregateResult, build_aggregator, gate_loss

torch.set_num_threads(1)


def test_gate_loss_is_the_bce_over_labeled_samples():
    probs = torch.tensor([0.8, 0.5]).view(2, 1, 1, 1)
    result = AggregateResult(probs=probs, weights=torch.ones(1, 2, 1, 1, 1))
    label = torch.ones(2, 1, 1, 1)
    assert gate_loss(result, label).item() == pytest.approx(-(math.log(0.8) + math.log(0.5)) / 2)
    assert gate_loss(result, label, torch.tensor([False, True])).item() == pytest.approx(math.log(2))
    assert gate_loss(result, label, torch.tensor([False, False])).item() == 0.0


def half_plane_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher 0 right on the left half, teacher 1 on the right half; the image is -1 left, +1 right."""
    generator = torch.Generator().manual_seed(0)
    label = (torch.rand(4, 1, 16, 16, generator=generator) > 0.5).float()
    right, wrong = 0.1 + 0.8 * label, 0.9 - 0.8 * label
    left_half = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    left_half[..., :8] = True
    teachers = torch.stack([torch.where(left_half, right, wrong), torch.where(left_half, wrong, right)])
    image = torch.where(left_half, -1.0, 1.0).expand(4, -1, -1, -1)
    return teachers, label, image


def test_learned_gate_starts_as_the_mean_and_all_its_parameters_get_gradients():
    teachers, label, image = half_plane_problem()
    gate = build_aggregator("learned", 2)
    assert 1_000 < sum(p.numel() for p in gate.parameters()) < 10_000
    torch.testing.assert_close(gate(teachers, image=image).weights, torch.full((2, 4, 1, 16, 16), 0.5))
    optimiser = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for _ in range(2):
        optimiser.zero_grad()
        gate_loss(gate(teachers, image=image), label).backward()
        optimiser.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())


def test_learned_gate_learns_which_teacher_to_trust_where():
    torch.manual_seed(0)
    teachers, label, image = half_plane_problem()
    mean_loss = gate_loss(build_aggregator("mean", 2)(teachers), label).item()
    gate = build_aggregator("learned", 2)
    optimiser = torch.optim.Adam(gate.parameters(), lr=1e-2)
    for _ in range(40):
        optimiser.zero_grad()
        loss = gate_loss(gate(teachers, image=image, label=label), label)
        loss.backward()
        optimiser.step()
    result = gate(teachers, image=image)
    assert mean_loss == pytest.approx(math.log(2))
    assert gate_loss(result, label).item() < 0.5 * mean_loss
    assert result.weights[0, :, :, :, :8].mean() > 0.8 and result.weights[1, :, :, :, 8:].mean() > 0.8
