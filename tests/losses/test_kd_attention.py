from __future__ import annotations

import math

import pytest
import torch

from prokd.losses import AttentionTransferLoss, attention_map

torch.set_num_threads(1)


def test_attention_map_is_the_channel_mean_of_powers():
    features = torch.tensor([[2.0, 0.0], [0.0, -2.0]]).reshape(1, 2, 1, 2)
    torch.testing.assert_close(attention_map(features), torch.tensor([2.0, 2.0]).reshape(1, 1, 1, 2))
    torch.testing.assert_close(attention_map(features, p=1), torch.tensor([1.0, 1.0]).reshape(1, 1, 1, 2))


def test_hand_value():
    # attention [1, 4] vs [2, 2]: unit vectors a, b; mean((a - b)²) = (2 - 2 a·b) / 2 = 1 - 5 / √34
    student = torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2)
    teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0]]).reshape(1, 2, 1, 2)
    value = AttentionTransferLoss([1], [2])([student], [teacher])
    assert value.item() == pytest.approx(1 - 5 / math.sqrt(34), abs=1e-6)


def test_larger_map_is_average_pooled_to_the_smaller():
    # |student|² = 1 on the left 2x2 block and 4 on the right one -> pooled [1, 4], as in the hand value
    student = torch.tensor([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]).reshape(1, 1, 2, 4)
    teacher = torch.full((1, 1, 1, 2), math.sqrt(2))
    expected = 1 - 5 / math.sqrt(34)
    assert AttentionTransferLoss([1], [1])([student], [teacher]).item() == pytest.approx(expected, abs=1e-6)
    assert AttentionTransferLoss([1], [1])([teacher], [student]).item() == pytest.approx(expected, abs=1e-6)


def test_zero_for_identical_or_rescaled_features():
    torch.manual_seed(0)
    features = torch.randn(2, 4, 8, 8)
    term = AttentionTransferLoss([4, 4], [4, 4])
    assert term([features, features], [features, features]).item() == pytest.approx(0.0, abs=1e-7)
    assert term([features, features], [3 * features, -features]).item() == pytest.approx(0.0, abs=1e-7)


def test_heterogeneous_maps_and_gradients():
    torch.manual_seed(1)
    student = torch.randn(2, 8, 32, 32, requires_grad=True)
    teacher = torch.randn(2, 32, 16, 16, requires_grad=True)
    term = AttentionTransferLoss([8], [32])
    loss = term([student], [teacher])
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert list(term.parameters()) == []
    with pytest.raises(ValueError, match="p must be > 0"):
        AttentionTransferLoss([8], [32], p=0)
