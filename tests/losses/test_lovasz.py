from __future__ import annotations

import numpy as np
import pytest
import torch

from prokd.losses.lovasz import lovasz_hinge, lovasz_softmax


def jaccard_loss_of_errors(foreground: np.ndarray, mispredicted: np.ndarray) -> float:
    """1 - IoU of the ground truth and the prediction that is wrong exactly on ``mispredicted``."""
    prediction = foreground ^ mispredicted
    union = (foreground | prediction).sum()
    return 0.0 if union == 0 else 1.0 - (foreground & prediction).sum() / union


def extension_by_prefix_sets(errors: np.ndarray, foreground: np.ndarray) -> float:
    """Σ_i m_(i) (J(S_i) - J(S_{i-1})) with every prefix set built and scored explicitly."""
    order = np.argsort(-errors, kind="stable")
    total, previous = 0.0, 0.0
    for i in range(1, len(order) + 1):
        mispredicted = np.zeros(len(errors), dtype=bool)
        mispredicted[order[:i]] = True
        current = jaccard_loss_of_errors(foreground, mispredicted)
        total += errors[order[i - 1]] * (current - previous)
        previous = current
    return total


def extension_by_level_sets(errors: np.ndarray, foreground: np.ndarray) -> float:
    """Choquet integral ∫_0^∞ J({m >= t}) dt for m >= 0, an independent formula for the extension."""
    levels = np.unique(errors[errors > 0])[::-1]
    steps = levels - np.append(levels[1:], 0.0)
    return float(sum(step * jaccard_loss_of_errors(foreground, errors >= level) for level, step in zip(levels, steps)))


def as_image(values, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=dtype).reshape(1, 1, 1, -1)


def test_hinge_hand_value():
    # errors 1 - σs = [-1, 1.5, 1.25, -2]; order (fg, bg, fg, bg); J = 1/2, 2/3, 1, 1 -> 1.5/2 + 1.25/6
    loss = lovasz_hinge(as_image([2.0, -0.5, 0.25, -3.0]), as_image([1, 1, 0, 0]))
    assert loss.item() == pytest.approx(23 / 24, abs=1e-12)


def test_hinge_at_binary_errors_equals_jaccard_loss():
    rng = np.random.default_rng(0)
    for trial in range(20):
        foreground = rng.random(12) < (0.0 if trial == 0 else 0.4)
        mispredicted = rng.random(12) < 0.3
        sign = np.where(foreground, 1.0, -1.0)
        logits = sign * (1.0 - mispredicted)  # hinge error exactly 1 on mispredicted pixels, 0 elsewhere
        loss = lovasz_hinge(as_image(logits), as_image(foreground))
        assert loss.item() == pytest.approx(jaccard_loss_of_errors(foreground, mispredicted), abs=1e-12)


def test_hinge_matches_brute_force_extension():
    rng = np.random.default_rng(1)
    for _ in range(10):
        foreground = rng.random(15) < 0.4
        logits = rng.normal(scale=1.5, size=15)
        errors = np.maximum(0.0, 1.0 - logits * np.where(foreground, 1.0, -1.0))
        loss = lovasz_hinge(as_image(logits), as_image(foreground)).item()
        assert loss == pytest.approx(extension_by_prefix_sets(errors, foreground), abs=1e-12)
        assert loss == pytest.approx(extension_by_level_sets(errors, foreground), abs=1e-12)


def test_hinge_without_foreground_is_the_largest_error():
    # with no foreground every non-empty error set has Jaccard loss 1, so only the largest error counts
    loss = lovasz_hinge(as_image([0.5, -2.0, 0.0]), as_image([0, 0, 0]))
    assert loss.item() == pytest.approx(1.5, abs=1e-12)


def test_hinge_is_zero_for_confident_correct_logits():
    target = torch.tensor([[1, 0], [0, 1]], dtype=torch.float32).reshape(1, 1, 2, 2)
    assert lovasz_hinge(5.0 * (2 * target - 1), target).item() == 0.0


def test_hinge_per_image_versus_batch():
    logits = torch.tensor([[2.0, 2.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0]]).reshape(2, 1, 1, 4)
    target = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]).reshape(2, 1, 1, 4)
    # image 1 is perfect (0), image 2 is wrong everywhere (J = 1)
    assert lovasz_hinge(logits, target, per_image=True).item() == pytest.approx(0.5)
    # one set of 8 pixels: the 4 wrong ones hold 1 of 3 foreground pixels -> J = 1 - 2 / 6
    assert lovasz_hinge(logits, target, per_image=False).item() == pytest.approx(2 / 3)
    # the (B, H, W) layout gives the same values
    assert lovasz_hinge(logits[:, 0], target[:, 0], per_image=False).item() == pytest.approx(2 / 3)


def test_hinge_ignore_index_drops_pixels():
    logits = as_image([2.0, 7.0, -0.5, 0.25, -3.0])
    target = as_image([1, 255, 1, 0, 0])
    kept = [0, 2, 3, 4]
    expected = lovasz_hinge(logits[..., kept], target[..., kept])
    assert lovasz_hinge(logits, target, ignore_index=255).item() == pytest.approx(expected.item(), abs=1e-12)
    all_ignored = lovasz_hinge(logits, torch.full_like(target, 255), ignore_index=255)
    assert all_ignored.item() == 0.0


def test_hinge_gradients_are_finite():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    target = (torch.rand(3, 1, 8, 8) > 0.6).float()
    target[1] = 0.0
    for per_image in (True, False):
        logits.grad = None
        lovasz_hinge(logits, target, per_image=per_image).backward()
        assert torch.isfinite(logits.grad).all()
        assert logits.grad.abs().sum() > 0


def test_hinge_rejects_bad_input():
    with pytest.raises(ValueError, match="0 or 1"):
        lovasz_hinge(as_image([0.0, 1.0]), as_image([0, 2]))
    with pytest.raises(ValueError, match="one channel"):
        lovasz_hinge(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="must both be"):
        lovasz_hinge(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))


def softmax_brute_force(probs: np.ndarray, labels: np.ndarray, classes: list[int]) -> float:
    """Mean over ``classes`` of the prefix-set extension of |[y = c] - p_c|; probs (N, C), labels (N,)."""
    per_class = [
        extension_by_prefix_sets(np.abs((labels == c) - probs[:, c]), labels == c) for c in classes
    ]
    return float(np.mean(per_class))


def two_class_probs(foreground_probs) -> torch.Tensor:
    p = torch.tensor(foreground_probs, dtype=torch.float64)
    return torch.stack([1 - p, p]).reshape(1, 2, 1, -1)


def test_softmax_hand_value():
    # errors |y - p| = [0.1, 0.6, 0.3, 0.2] for both classes; class 1: 47/120, class 0: 1.1/3 = 44/120
    loss = lovasz_softmax(two_class_probs([0.9, 0.4, 0.3, 0.2]), torch.tensor([1, 1, 0, 0]).reshape(1, 1, 4))
    assert loss.item() == pytest.approx(91 / 240, abs=1e-12)


def test_softmax_matches_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(5):
        probs = rng.dirichlet(np.ones(3), size=(2, 12))  # (B, N, C)
        labels = rng.integers(0, 2, size=(2, 12))  # class 2 never present
        probs_t = torch.from_numpy(probs).permute(0, 2, 1).reshape(2, 3, 3, 4)
        labels_t = torch.from_numpy(labels).reshape(2, 3, 4)
        flat_probs, flat_labels = probs.reshape(-1, 3), labels.reshape(-1)
        assert lovasz_softmax(probs_t, labels_t).item() == pytest.approx(
            softmax_brute_force(flat_probs, flat_labels, [0, 1]), abs=1e-12
        )
        assert lovasz_softmax(probs_t, labels_t, classes="all").item() == pytest.approx(
            softmax_brute_force(flat_probs, flat_labels, [0, 1, 2]), abs=1e-12
        )
        assert lovasz_softmax(probs_t, labels_t, classes=[2]).item() == pytest.approx(
            softmax_brute_force(flat_probs, flat_labels, [2]), abs=1e-12
        )
        per_image = [softmax_brute_force(probs[b], labels[b], sorted(set(labels[b]))) for b in range(2)]
        assert lovasz_softmax(probs_t, labels_t, per_image=True).item() == pytest.approx(
            np.mean(per_image), abs=1e-12
        )


def test_softmax_at_one_hot_probs_is_mean_jaccard_loss():
    labels = torch.tensor([0, 0, 1, 1, 2, 2]).reshape(1, 2, 3)
    predicted = torch.tensor([0, 1, 1, 1, 2, 0]).reshape(1, 2, 3)
    probs = torch.nn.functional.one_hot(predicted, 3).permute(0, 3, 1, 2).double()
    # IoU per class: 0 -> 1/3, 1 -> 2/3, 2 -> 1/2
    expected = np.mean([1 - 1 / 3, 1 - 2 / 3, 1 - 1 / 2])
    assert lovasz_softmax(probs, labels).item() == pytest.approx(expected, abs=1e-12)
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double()
    assert lovasz_softmax(perfect, labels).item() == 0.0


def test_softmax_ignore_index_and_gradients():
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    labels = (torch.rand(2, 4, 4) > 0.5).long()
    labels[0, 0] = 255
    loss = lovasz_softmax(logits.softmax(1), labels, ignore_index=255)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    kept = labels != 255
    kept_probs = logits.detach().softmax(1).permute(0, 2, 3, 1)[kept]  # (K, 2)
    expected = lovasz_softmax(kept_probs.T.reshape(1, 2, 1, -1), labels[kept].reshape(1, 1, -1))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_softmax_rejects_bad_input():
    with pytest.raises(ValueError, match="C >= 2"):
        lovasz_softmax(torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target must be"):
        lovasz_softmax(torch.ones(1, 2, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        lovasz_softmax(torch.ones(1, 2, 2, 2), torch.full((1, 2, 2), 3))
