from __future__ import annotations

import pytest
import torch

from prokd.losses import AffinityLoss, affinity_matrix

torch.set_num_threads(1)


def test_affinity_matrix_is_the_pixel_cosine_similarity():
    features = torch.tensor([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0]]).reshape(1, 2, 1, 3)
    c = 2**-0.5
    expected = torch.tensor([[1.0, 0.0, c], [0.0, 1.0, c], [c, c, 1.0]]).reshape(1, 3, 3)
    torch.testing.assert_close(affinity_matrix(features), expected)


def test_hand_value():
    # student pixels (1, 0), (0, 1): identity; teacher pixels 1, -1: [[1, -1], [-1, 1]]; mean of squares 2 / 4
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    teacher = torch.tensor([1.0, -1.0]).reshape(1, 1, 1, 2)
    assert AffinityLoss([2], [1])([student], [teacher]).item() == pytest.approx(0.5)


def test_zero_for_identical_structure_at_other_widths_and_sizes():
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 4, 4)
    widened = torch.cat([2 * teacher, teacher], dim=1)  # same cosine similarities with 8 channels
    upsampled = widened.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # pools back to 4x4
    term = AffinityLoss([8], [4])
    assert term([upsampled], [teacher]).item() == pytest.approx(0.0, abs=1e-6)
    assert AffinityLoss([4], [4], grid=2)([teacher], [teacher]).item() == pytest.approx(0.0, abs=1e-6)


def test_grid_bounds_the_number_of_nodes():
    torch.manual_seed(1)
    student, teacher = torch.randn(1, 2, 8, 8), torch.randn(1, 3, 8, 8)
    # one node: similarity 1 on both sides
    assert AffinityLoss([2], [3], grid=1)([student], [teacher]).item() == pytest.approx(0.0, abs=1e-6)
    assert AffinityLoss([2], [3], grid=4)([student], [teacher]).item() > 0
    with pytest.raises(ValueError, match="grid must be >= 1"):
        AffinityLoss([2], [3], grid=0)


def test_heterogeneous_maps_and_gradients():
    torch.manual_seed(2)
    student = torch.randn(2, 8, 32, 32, requires_grad=True)
    teacher = torch.randn(2, 32, 16, 16, requires_grad=True)
    term = AffinityLoss([8], [32])
    loss = term([student], [teacher])
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    assert list(term.parameters()) == []
