"""Output distillation: the temperature-softened Kullback-Leibler divergence of Hinton et al.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS Deep Learning Workshop 2015.

For binary segmentation every pixel is a Bernoulli variable, so a soft target is one number per pixel:
the teacher's *foreground probability at temperature T*, ``(B, 1, H, W)``. Both network heads reduce to
one foreground logit ``d``: the logit itself for a sigmoid head, ``z_1 - z_0`` for a two-logit softmax
head, because ``softmax(z / T)_1 = sigmoid((z_1 - z_0) / T)``. The student's divergence from the teacher
is then the Bernoulli KL at temperature T, which for a softmax student equals the two-class softmax KL.
:func:`bernoulli_kl` gives it per pixel (the consistency term of :mod:`prokd.distill.consistency` uses it too),
:func:`kl_distillation` its mean.

The divergence can be restricted to the pixels where the teacher carries information beyond the labels:
:func:`uncertainty_weights` keeps the pixels the teacher is unsure about (no labels needed, so it also
works on unlabeled images), :func:`boundary_weights` a band around the edge of a mask (the ground truth
or the teacher's thresholded prediction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "bernoulli_kl",
    "boundary_weights",
    "foreground_logit",
    "kl_distillation",
    "soft_foreground",
    "uncertainty_weights",
]


def foreground_logit(logits: torch.Tensor) -> torch.Tensor:
    """The foreground logit ``d`` with ``p(foreground) = sigmoid(d)``.

    Args:
        logits: (B, 1, H, W) sigmoid logit, or (B, 2, H, W) softmax logits of (background, foreground).

    Returns:
        (B, 1, H, W): the logit itself, or ``z_1 - z_0``.
    """
    if logits.ndim != 4 or logits.shape[1] not in (1, 2):
        raise ValueError(f"foreground_logit: logits must be (B, 1, H, W) or (B, 2, H, W), got {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return logits
    return logits[:, 1:2] - logits[:, 0:1]


def soft_foreground(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Foreground probability at ``temperature``: ``sigmoid(z / T)`` for one logit, ``softmax(z / T)_1``
    for two.

    Args:
        logits: (B, 1, H, W) or (B, 2, H, W).
        temperature: T > 0; T > 1 softens the probabilities towards 1/2.

    Returns:
        (B, 1, H, W) probabilities in [0, 1].
    """
    _check_temperature(temperature)
    return torch.sigmoid(foreground_logit(logits) / temperature)


def bernoulli_kl(student_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per pixel, the Bernoulli ``KL(p || q)`` from the soft targets ``p`` to the student's ``q = sigmoid(d / T)``.

    ``KL = p log(p / q) + (1 - p) log((1 - p) / (1 - q))``, with ``log q`` and ``log(1 - q)`` taken as
    ``logsigmoid(±d / T)`` (stable for any logit) and ``0 log 0 = 0``, so targets of exactly 0 or 1 need no
    clamping. ``target`` is treated as a constant: no gradient reaches it.

    Args:
        student_logits: (B, 1, H, W) or (B, 2, H, W) raw student outputs.
        target: (B, 1, H, W) target foreground probabilities at the same temperature, in [0, 1].
        temperature: T > 0.

    Returns:
        (B, 1, H, W) divergences, >= 0.
    """
    _check_temperature(temperature)
    student = foreground_logit(student_logits) / temperature
    _check_shape("bernoulli_kl", "target", target, tuple(student.shape))
    p = target.detach().to(student.dtype)
    return (
        torch.xlogy(p, p)
        + torch.xlogy(1 - p, 1 - p)
        - p * F.logsigmoid(student)
        - (1 - p) * F.logsigmoid(-student)
    )


def kl_distillation(
    student_logits: torch.Tensor,
    teacher_foreground: torch.Tensor,
    temperature: float,
    weight_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² ·`` mean over pixels of the Bernoulli ``KL(p || q)`` from the teacher's soft targets ``p`` to
    the student's ``q = sigmoid(d / T)`` (:func:`bernoulli_kl`).

    The factor ``T²`` keeps the gradient scale independent of T (Hinton et al., section 2).
    ``teacher_foreground`` is treated as a constant: no gradient reaches the teacher.

    Args:
        student_logits: (B, 1, H, W) or (B, 2, H, W) raw student outputs.
        teacher_foreground: (B, 1, H, W) teacher foreground probabilities at the same temperature, in
            [0, 1] (see :func:`soft_foreground`).
        temperature: T > 0.
        weight_map: optional (B, 1, H, W) non-negative pixel weights; the mean becomes the weighted mean
            ``Σ w KL / Σ w`` (0 when all weights are 0).

    Returns:
        Scalar tensor.
    """
    expected = tuple(foreground_logit(student_logits).shape)
    _check_shape("kl_distillation", "teacher_foreground", teacher_foreground, expected)
    kl = bernoulli_kl(student_logits, teacher_foreground, temperature)
    if weight_map is None:
        return temperature**2 * kl.mean()
    _check_shape("kl_distillation", "weight_map", weight_map, expected)
    weights = weight_map.to(kl.dtype)
    return temperature**2 * (weights * kl).sum() / weights.sum().clamp_min(torch.finfo(kl.dtype).tiny)


def uncertainty_weights(teacher_foreground: torch.Tensor, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """1 where the teacher is uncertain, ``low < p < high``, else 0.

    Args:
        teacher_foreground: (B, 1, H, W) teacher foreground probabilities at temperature 1, so that the
            thresholds do not depend on the distillation temperature.
        low, high: ``0 <= low < high <= 1``.

    Returns:
        (B, 1, H, W) weights in {0, 1}, in the dtype of ``teacher_foreground``.
    """
    if not 0 <= low < high <= 1:
        raise ValueError(f"uncertainty_weights: need 0 <= low < high <= 1, got low={low}, high={high}")
    return ((teacher_foreground > low) & (teacher_foreground < high)).to(teacher_foreground.dtype)


def boundary_weights(mask: torch.Tensor, width_px: int) -> torch.Tensor:
    """1 on a band around the edge of a binary mask, else 0.

    A pixel is in the band when its ``(2 w + 1)²`` square neighbourhood (``w = width_px``) holds both
    foreground and background, i.e. it lies in the morphological dilation but not the erosion of the mask:
    ``w`` pixels on each side of the edge. The image border is not an edge.

    Args:
        mask: (B, 1, H, W) binary mask (bool, or numbers where nonzero is foreground), e.g. the ground truth
            or ``teacher_foreground > 0.5``.
        width_px: w >= 1.

    Returns:
        (B, 1, H, W) float weights in {0, 1}.
    """
    if width_px < 1:
        raise ValueError(f"boundary_weights: width_px must be >= 1, got {width_px}")
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"boundary_weights: mask must be (B, 1, H, W), got {tuple(mask.shape)}")
    foreground = (mask != 0).float()
    window = {"kernel_size": 2 * width_px + 1, "stride": 1, "padding": width_px}
    dilated = F.max_pool2d(foreground, **window)
    eroded = 1 - F.max_pool2d(1 - foreground, **window)
    return dilated - eroded


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")


def _check_shape(function: str, name: str, tensor: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{function}: {name} must have shape {expected}, got {tuple(tensor.shape)}")
