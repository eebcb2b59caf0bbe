"""Uncertainty at prediction time: a per-voxel entropy map, the teachers' disagreement, and per-volume scores.

The entropy of the foreground probability ``p`` (after flip test-time augmentation when it is on) is the binary
entropy ``H(p) = -p log2 p - (1 - p) log2 (1 - p)`` in bits: 0 where the network is sure, 1 where ``p = 0.5``.
The per-volume score is the mean entropy over the voxels the network gives at least a 5 % chance of being gland:

    score = mean(H(p) over p >= 0.05)

A network sure of its gland has a thin band of uncertain voxels around a confident core (a low score); one that
hesitates over where the gland is, or whether it is there, has uncertainty spread through the region (a high
score). Restricting the mean to that region matters: over the whole volume the background's near-zero
probabilities far outnumber the gland's voxels, and their tiny entropies dominate any sum. The score was chosen
on the PROMISE12 validation cases of the six distilled students of ``configs/promise12_deploy.yaml`` among
seven per-volume scores (this one; entropy per unit of predicted volume; mean entropy in a band around the
predicted boundary; 1 - soft Dice of ``p`` against its mask; disagreement with the prediction without flip TTA;
the worst slice's entropy per unit of predicted area; the inverse predicted volume), as the one that ranked the
errors best (Spearman +0.49 with 1 - Dice over the 24 validation predictions; the 0.05 cut was chosen there
among 0.01, 0.05, 0.1, 0.2 and 0.5; ``benchmarks/uncertainty_scores.py``, BENCHMARKS.md
``uncertainty-scores``). ``benchmarks/deploy.py`` reports it on the test cases. Mehrtash et al.,
"Confidence Calibration and Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI
2020, study such per-volume uncertainty for prostate MRI.

For a distilled student whose teachers are at hand, the teachers' disagreement is the standard deviation of
their foreground probabilities per voxel, and its score the mean of that map over the voxels any teacher
calls foreground.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prokd.runs.folder import read_json

__all__ = [
    "CANDIDATE_PROBABILITY",
    "REVIEW_ABOVE",
    "binary_entropy",
    "disagreement",
    "disagreement_score",
    "entropy_score",
    "teacher_runs",
]

_EPSILON = 1e-7

CANDIDATE_PROBABILITY = 0.05
"""Voxels with at least this foreground probability make up the region :func:`entropy_score` averages over."""

REVIEW_ABOVE = 0.675
"""Default score above which ``prokd predict --uncertainty`` flags a volume for review (``--review-above``): the
largest score of any PROMISE12 validation case of the six distilled students of ``configs/promise12_deploy.yaml``
(``benchmarks/deploy.py``), so a case is flagged when it is more uncertain than every case the students were
chosen on."""


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Per-voxel entropy in bits, float32, of a foreground probability array of any shape."""
    p = np.clip(np.asarray(probability, dtype=np.float32), _EPSILON, 1 - _EPSILON)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def entropy_score(probability: np.ndarray, entropy: np.ndarray) -> float:
    """Mean ``entropy`` over the voxels whose foreground ``probability`` is at least
    :data:`CANDIDATE_PROBABILITY` (see the module docstring); 0 when there are none (nothing anywhere looks like
    gland, and the network is sure of it)."""
    candidate = np.asarray(probability) >= CANDIDATE_PROBABILITY
    return float(entropy[candidate].mean(dtype=np.float64)) if candidate.any() else 0.0


def disagreement(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Standard deviation over teachers of their foreground probabilities ``(K, ...)`` → ``(...)`` float32."""
    return np.std(np.stack(probabilities), axis=0).astype(np.float32)


def disagreement_score(probabilities: Sequence[np.ndarray], spread: np.ndarray) -> float:
    """Mean disagreement over the voxels at least one teacher calls foreground (0 when none does)."""
    foreground = np.any(np.stack(probabilities) >= 0.5, axis=0)
    return float(spread[foreground].mean()) if foreground.any() else 0.0


def teacher_runs(run: Path) -> list[Path]:
    """The teachers' RUN folders recorded in a distilled ``run``'s ``teachers.json`` (empty for a run trained without
    teachers).

    Raises:
        FileNotFoundError: a recorded teacher is no longer where it was trained, naming it.
    """
    record = run / "teachers.json"
    if not record.is_file():
        return []
    teachers = [Path(entry["run"]) for entry in read_json(record)]
    for teacher in teachers:
        if not teacher.is_dir():
            raise FileNotFoundError(f"{teacher}: teacher of {run} not found (its disagreement needs every teacher)")
    return teachers
