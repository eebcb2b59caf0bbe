"""Lovász losses: convex surrogates of the Jaccard (IoU) loss.

Berman, Triki, Blaschko, "The Lovász-Softmax loss: A tractable surrogate for the optimization of the
intersection-over-union measure in neural networks", CVPR 2018.

For one class, the Jaccard loss of a set ``S`` of mispredicted pixels is

    J(S) = 1 - |y ∩ ŷ_S| / |y ∪ ŷ_S| = 1 - (|y| - |S ∩ y|) / (|y| + |S \\ y|),

where ``y`` is the ground-truth foreground and ``ŷ_S`` the prediction that is wrong exactly on ``S``.
``J`` is submodular, so its Lovász extension is convex and piecewise linear in a vector ``m >= 0`` of
per-pixel errors. With ``π`` ordering ``m`` decreasingly and ``S_i = {π_1, ..., π_i}``,

    J̄(m) = Σ_i m_{π_i} (J(S_i) - J(S_{i-1})),        J(S_0) = 0,

which equals ``J`` itself at every 0/1 error vector. :func:`lovasz_hinge` feeds it the hinge errors
of binary logits, :func:`lovasz_softmax` the absolute errors of class probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["lovasz_hinge", "lovasz_softmax"]


def lovasz_hinge(
    logits: torch.Tensor, target: torch.Tensor, per_image: bool = True, ignore_index: int | None = None
) -> torch.Tensor:
    """Binary Lovász hinge loss: the Lovász extension of the foreground Jaccard loss of hinge errors.

    The error of a pixel with logit ``s`` and sign ``σ = 2y - 1`` is ``max(0, 1 - σ s)``, so a pixel
    costs nothing once its logit is on the correct side with a margin of at least 1.

    Args:
        logits: (B, 1, H, W) or (B, H, W) raw scores of the foreground.
        target: same layout as ``logits`` (either form), values in {0, 1} or ``ignore_index``.
        per_image: average the loss of each image (an image whose pixels are all ignored counts as 0);
            otherwise all pixels of the batch form one set.
        ignore_index: target value of pixels left out of the loss.

    Returns:
        Scalar tensor.
    """
    scores, labels = _flatten_binary(logits, target)
    if per_image:
        losses = [_lovasz_hinge_flat(*_drop_ignored(s, y, ignore_index)) for s, y in zip(scores, labels)]
        return torch.stack(losses).mean()
    return _lovasz_hinge_flat(*_drop_ignored(scores.reshape(-1), labels.reshape(-1), ignore_index))


def lovasz_softmax(
    probs: torch.Tensor,
    target: torch.Tensor,
    classes: str | Sequence[int] = "present",
    per_image: bool = False,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Multi-class Lovász-Softmax loss: per class, the Lovász extension of the Jaccard loss of
    ``|[y = c] - p_c|``, averaged over the selected classes.

    Args:
        probs: (B, C, H, W) class probabilities (softmax outputs), C >= 2.
        target: (B, H, W) or (B, 1, H, W) integer labels in [0, C) or ``ignore_index``.
        classes: ``"present"`` (classes occurring in the target, per image when ``per_image``),
            ``"all"``, or a sequence of class indices.
        per_image: average the loss of each image (an image with no selected class counts as 0);
            otherwise all pixels of the batch form one set.
        ignore_index: target value of pixels left out of the loss.

    Returns:
        Scalar tensor.
    """
    if probs.ndim != 4 or probs.shape[1] < 2:
        raise ValueError(f"lovasz_softmax: probs must be (B, C, H, W) with C >= 2, got {tuple(probs.shape)}")
    batch, n_classes = probs.shape[:2]
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != probs.shape[:1] + probs.shape[2:]:
        raise ValueError(
            f"lovasz_softmax: target must be (B, H, W) = {tuple(probs.shape[:1] + probs.shape[2:])}, "
            f"got {tuple(target.shape)}"
        )
    pixel_probs = probs.permute(0, 2, 3, 1).reshape(batch, -1, n_classes)
    labels = target.reshape(batch, -1)
    if per_image:
        losses = [
            _lovasz_softmax_flat(*_drop_ignored(p, y, ignore_index), classes) for p, y in zip(pixel_probs, labels)
        ]
        return torch.stack(losses).mean()
    flat_probs, flat_labels = _drop_ignored(pixel_probs.reshape(-1, n_classes), labels.reshape(-1), ignore_index)
    return _lovasz_softmax_flat(flat_probs, flat_labels, classes)


def _lovasz_hinge_flat(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász hinge of (N,) scores against (N,) binary labels; 0 (still part of the graph) when N = 0."""
    if scores.numel() == 0:
        return scores.sum()
    if ((labels != 0) & (labels != 1)).any():
        raise ValueError("lovasz_hinge: target values must be 0 or 1 (or ignore_index)")
    foreground = labels.to(scores.dtype)
    errors = 1.0 - scores * (2.0 * foreground - 1.0)
    errors_sorted, order = torch.sort(errors, descending=True)
    return torch.dot(F.relu(errors_sorted), _jaccard_loss_increments(foreground[order]))


def _lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor, classes: str | Sequence[int]) -> torch.Tensor:
    """Lovász-Softmax of (N, C) probabilities against (N,) labels; 0 (still part of the graph) when no
    class is selected."""
    losses = []
    for class_index in _selected_classes(classes, labels, probs.shape[1]):
        foreground = (labels == class_index).to(probs.dtype)
        errors = (foreground - probs[:, class_index]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _jaccard_loss_increments(foreground[order])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def _jaccard_loss_increments(sorted_foreground: torch.Tensor) -> torch.Tensor:
    """``J(S_i) - J(S_{i-1})`` for the prefix sets ``S_i`` of pixels ordered by decreasing error.

    Args:
        sorted_foreground: (N,) 0/1 ground truth of one class, in decreasing-error order.
    """
    n_foreground = sorted_foreground.sum()
    intersection = n_foreground - sorted_foreground.cumsum(0)
    union = n_foreground + (1.0 - sorted_foreground).cumsum(0)
    jaccard_loss = 1.0 - intersection / union
    return torch.cat((jaccard_loss[:1], jaccard_loss[1:] - jaccard_loss[:-1]))


def _selected_classes(classes: str | Sequence[int], labels: torch.Tensor, n_classes: int) -> list[int]:
    if classes == "all":
        return list(range(n_classes))
    if classes == "present":
        present = torch.unique(labels).tolist()
        if present and not 0 <= min(present) <= max(present) < n_classes:
            raise ValueError(f"lovasz_softmax: target labels {present} are outside [0, {n_classes})")
        return present
    if isinstance(classes, str):
        raise ValueError(f"lovasz_softmax: classes must be 'present', 'all' or a list of indices, got {classes!r}")
    return list(classes)


def _flatten_binary(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) or (B, H, W) logits and target -> (B, H*W) each."""
    logits, target = _squeeze_channel(logits, "logits"), _squeeze_channel(target, "target")
    if logits.ndim != 3 or logits.shape != target.shape:
        raise ValueError(
            f"lovasz_hinge: logits and target must both be (B, H, W) or (B, 1, H, W), "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    return logits.reshape(logits.shape[0], -1), target.reshape(target.shape[0], -1)


def _squeeze_channel(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.ndim != 4:
        return tensor
    if tensor.shape[1] != 1:
        raise ValueError(f"lovasz_hinge: {name} must have one channel, got shape {tuple(tensor.shape)}")
    return tensor[:, 0]


def _drop_ignored(
    values: torch.Tensor, labels: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the pixels (rows) whose label is ``ignore_index`` from (N, ...) values and (N,) labels."""
    if ignore_index is None:
        return values, labels
    keep = labels != ignore_index
    return values[keep], labels[keep]
