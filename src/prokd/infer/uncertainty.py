"""Uncertainty at prediction time: a per-voxel entropy map, the teachers' disagreement, and per-volume scores.

The entropy of the foreground probability ``p`` (after flip test-time augmentation when it is on) is the binary
entropy ``H(p) = -p log2 p - (1 - p) log2 (1 - p)`` in bits: 0 where the network is sure, 1 where ``p = 0.5``.
Confident networks are uncertain along the gland's boundary, so the entropy summed over the volume grows with
the boundary's area; the per-volume score divides it by the expected gland volume ``sum(p)``:

    score = sum(H(p)) / sum(p)

which is the uncertain volume per unit of predicted gland (a failure is a large uncertain region next to a
small gland, or a gland predicted where the network hesitates everywhere). Mehrtash et al., "Confidence
Calibration and Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 2020, use the
same kind of volume-normalised uncertainty to flag failed prostate segmentations.

For a distilled student whose teachers are at hand, the teachers' disagreement is the standard deviation of
their foreground probabilities per voxel, and its score the mean of that map over the voxels any teacher
calls foreground.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prokd.runs.folder import read_json

__all__ = ["REVIEW_ABOVE", "binary_entropy", "disagreement", "disagreement_score", "entropy_score", "teacher_runs"]

_EPSILON = 1e-7

REVIEW_ABOVE = 2.31
"""Default score above which ``prokd predict --uncertainty`` flags a volume for review (``--review-above``): the
largest score of any PROMISE12 validation case of the six distilled students of ``configs/promise12_deploy.yaml``
(``benchmarks/deploy.py``), so a case is flagged when it is more uncertain than every case the students were chosen
on. On the test cases it flagged 1 of 48 and the score ranked errors only weakly (Spearman +0.27 and +0.37 with
1 - Dice, BENCHMARKS.md ``deploy``): the entropy of the background's many near-zero probabilities dominates it."""


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Per-voxel entropy in bits, float32, of a foreground probability array of any shape."""
    p = np.clip(np.asarray(probability, dtype=np.float32), _EPSILON, 1 - _EPSILON)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).astype(np.float32)


def entropy_score(probability: np.ndarray, entropy: np.ndarray) -> float:
    """``sum(entropy) / sum(probability)``: uncertain voxels per expected foreground voxel (see the module docstring);
    the entropy sum itself when nothing is predicted."""
    return float(entropy.sum(dtype=np.float64) / max(float(probability.sum(dtype=np.float64)), 1.0))


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
