"""Per-case 3D segmentation metrics with an explicit empty-mask policy, and their per-group summaries.

:func:`case_metrics` scores a binary (Z, Y, X) prediction against its ground truth: Dice and IoU from
voxel counts, HD95 and ASSD from MONAI's surface distances (``compute_hausdorff_distance`` with
``percentile=95``, i.e. the larger of the two directed 95th percentiles, and
``compute_average_surface_distance`` with ``symmetric=True``, the mean over both surfaces' distances),
in mm with the volume's (z, y, x) spacing or in pixels when the spacing is unknown.
MONAI returns NaN when a mask is empty; this module never does, see ``EMPTY_MASK_POLICY`` below.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

__all__ = ["EMPTY_MASK_POLICY", "case_metrics", "dice_score", "summarize"]

EMPTY_MASK_POLICY = """\
Empty-mask policy (replaces MONAI's NaN, so that means stay finite and misses are penalised):

=========================  ====  ====  ===============  ===============
prediction / ground truth  dice  iou   hd95             assd
=========================  ====  ====  ===============  ===============
both empty                 1     1     0                0
exactly one empty          0     0     volume diagonal  volume diagonal
both non-empty             measured    measured         measured
=========================  ====  ====  ===============  ===============

The volume diagonal is the largest distance between two voxel centres of the volume,
sqrt(sum_i ((n_i - 1) * s_i) ** 2) for shape n and spacing s (1 per axis when unknown): no surface
distance inside the volume can exceed it, so a missed or hallucinated prostate scores the worst
possible distance.
"""

__doc__ = f"{__doc__}\n{EMPTY_MASK_POLICY}"


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float] | None
) -> dict[str, float | str]:
    """Overlap, surface distance and volume metrics of one case.

    Args:
        pred: (Z, Y, X) predicted mask; non-zero voxels are foreground.
        truth: (Z, Y, X) ground-truth mask; non-zero voxels are foreground.
        spacing: (z, y, x) voxel size in mm, or ``None`` when unknown (distances in pixels, volumes in voxels).

    Returns:
        ``dice``, ``iou``, ``hd95``, ``assd`` (floats, never NaN; see ``EMPTY_MASK_POLICY``),
        ``volume_pred``, ``volume_true`` (ml, or voxels without spacing), ``volume_unit`` (``"ml"`` or
        ``"voxels"``) and ``distance_unit`` (``"mm"`` or ``"px"``).
    """
    pred_mask, truth_mask = _binary_masks(pred, truth)
    voxel_spacing = _voxel_spacing(spacing)
    dice, iou = _overlap(pred_mask, truth_mask)
    hd95, assd = _surface_distances(pred_mask, truth_mask, voxel_spacing)
    voxel_volume = math.prod(voxel_spacing) / 1000.0 if spacing is not None else 1.0
    return {
        "dice": dice,
        "iou": iou,
        "hd95": hd95,
        "assd": assd,
        "volume_pred": float(pred_mask.sum()) * voxel_volume,
        "volume_true": float(truth_mask.sum()) * voxel_volume,
        "volume_unit": "ml" if spacing is not None else "voxels",
        "distance_unit": "mm" if spacing is not None else "px",
    }


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two (Z, Y, X) masks (non-zero voxels are foreground); 1 when both are empty."""
    return _overlap(*_binary_masks(pred, truth))[0]


def summarize(
    rows: list[dict[str, Any]], metrics: Sequence[str] = ("dice", "iou", "hd95", "assd"), by: str | None = "site"
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Mean, sample standard deviation and count of each metric, per group and overall.

    Args:
        rows: one mapping per case holding the ``metrics`` and, unless ``by`` is ``None``, the key ``by``.
        metrics: names of the metrics to summarise.
        by: row key that defines the groups (e.g. ``"site"``), or ``None`` for the overall summary only.

    Returns:
        ``{group: {metric: {"mean", "sd", "n"}}}`` with the groups in sorted order followed by
        ``"overall"``; ``sd`` uses ddof=1 and is 0 for a single value.
    """
    if not rows:
        raise ValueError("summarize: no rows to summarise")
    required = [*metrics, by] if by is not None else list(metrics)
    for index, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"summarize: row {index} has no {', '.join(map(repr, missing))}")
    groups: dict[str, list[dict[str, Any]]] = {}
    if by is not None:
        for row in rows:
            groups.setdefault(str(row[by]), []).append(row)
        if "overall" in groups:
            raise ValueError(f"summarize: a '{by}' named 'overall' clashes with the overall summary")
    groups = dict(sorted(groups.items()))
    groups["overall"] = rows
    return {name: {metric: _describe(group, metric) for metric in metrics} for name, group in groups.items()}


def _describe(rows: list[dict[str, Any]], metric: str) -> dict[str, float | int]:
    values = np.array([row[metric] for row in rows], dtype=float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "sd": sd, "n": len(values)}


def _binary_masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.ndim != 3 or pred.shape != truth.shape:
        raise ValueError(
            f"pred and truth must be (Z, Y, X) masks of one shape, got {pred.shape} and {truth.shape}"
        )
    return pred != 0, truth != 0


def _voxel_spacing(spacing: tuple[float, float, float] | None) -> tuple[float, float, float]:
    """The (z, y, x) spacing, or unit spacing when unknown."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"case_metrics: spacing must be three positive (z, y, x) values in mm, got {spacing}")
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean masks; both 1 when both masks are empty."""
    intersection = int(np.logical_and(pred, truth).sum())
    union = int(np.logical_or(pred, truth).sum())
    if union == 0:
        return 1.0, 1.0
    return 2.0 * intersection / (union + intersection), intersection / union


def _surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[float, float]:
    """HD95 and ASSD of two boolean (Z, Y, X) masks in the unit of ``spacing``, with the empty-mask policy."""
    pred_empty, truth_empty = not pred.any(), not truth.any()
    if pred_empty and truth_empty:
        return 0.0, 0.0
    if pred_empty or truth_empty:
        diagonal = math.hypot(*((n - 1) * s for n, s in zip(pred.shape, spacing)))
        return diagonal, diagonal
    pred_t, truth_t = torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None]
    with warnings.catch_warnings():
        # MONAI 1.5+ passes its own deprecated ``always_return_as_numpy`` argument internally.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd95 = compute_hausdorff_distance(pred_t, truth_t, include_background=True, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(
            pred_t, truth_t, include_background=True, symmetric=True, spacing=spacing
        )
    return float(hd95), float(assd)


MISSING = "–"
"""How a table shows a value that does not exist (no stages evaluated, latency not measured yet)."""


def format_stats(stats: dict[str, Any] | None, digits: int = 3) -> str:
    """``{"mean", "sd", "n"}`` as ``"0.851 ± 0.046"``, or ``"0.851 (n = 1)"`` when a single value gives no spread,
    or ``"–"`` for none."""
    if stats is None or stats.get("mean") is None:
        return MISSING
    if stats.get("n", 2) < 2:
        return f"{stats['mean']:.{digits}f} (n = 1)"
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"
