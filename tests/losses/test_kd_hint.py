from __future__ import annotations

import pytest
import torch

from prokd.losses import HintLoss, build_feature_term

torch.set_num_threads(1)


def test_hand_value_with_a_known_adapter_and_downsampling():
    # student channels k and k + 16 (k = 0..15 over the 4x4 map); adapter 2 s0 - s1 + 0.5 = k - 15.5;
    # bilinear 4x4 -> 2x2 averages each 2x2 block: k = 2.5, 4.5, 10.5, 12.5 -> -13, -11, -5, -3
    student = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    term = HintLoss([2], [1])
    with torch.no_grad():
        term.adapters[0].weight.copy_(torch.tensor([2.0, -1.0]).reshape(1, 2, 1, 1))
        term.adapters[0].bias.fill_(0.5)
    teacher = torch.tensor([-13.0, -12.0, -7.0, -2.0]).reshape(1, 1, 2, 2)  # errors 0, 1, 2, -1
    assert term([student], [teacher]).item() == pytest.approx((0 + 1 + 4 + 1) / 4)


def test_adapters_are_learnt_to_zero_loss_on_identical_features():
    torch.manual_seed(0)
    features = torch.randn(2, 4, 8, 8)
    term = build_feature_term("hint", [4], [4])
    optimizer = torch.optim.Adam(term.parameters(), lr=0.05)
    initial = term([features], [features]).item()
    for _ in range(200):
        optimizer.zero_grad()
        loss = term([features], [features])
        loss.backward()
        optimizer.step()
    assert initial > 0.1 and term([features], [features]).item() < 1e-4


def test_heterogeneous_maps_and_gradients():
    torch.manual_seed(1)
    student = [torch.randn(2, 8, 32, 32, requires_grad=True), torch.randn(2, 16, 4, 4, requires_grad=True)]
    teacher = [torch.randn(2, 32, 16, 16, requires_grad=True), torch.randn(2, 64, 8, 8, requires_grad=True)]
    term = HintLoss([8, 16], [32, 64])
    assert [tuple(a.weight.shape) for a in term.adapters] == [(32, 8, 1, 1), (64, 16, 1, 1)]
    loss = term(student, teacher)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in student)
    assert all(f.grad is None for f in teacher)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.parameters())
