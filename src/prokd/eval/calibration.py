"""Calibration of a network's foreground probability: temperature scaling and the reliability diagram.

Temperature scaling (Guo et al., "On calibration of modern neural networks", ICML 2017) divides a network's
foreground log-odds ``d`` by one scalar :math:`T > 0` fitted on held-out cases by minimising the negative
log-likelihood of their labels,

.. math::

    T^* = \\arg\\min_T \\; -\\frac{1}{N} \\sum_i \\big[ y_i \\log \\sigma(d_i / T) + (1 - y_i) \\log (1 - \\sigma(d_i / T)) \\big].

It moves no decision (``d = 0`` stays the 0.5 threshold), so masks and Dice do not change, but a teacher that is
confidently wrong on another hospital's images becomes less confident there, and the multi-teacher aggregation,
which weighs teachers by their confidence, trusts it less.

Which voxels: those of the **gland slices**, the slices where the label or the uncalibrated prediction has
foreground. Slices far from the gland are certain background for any network and would make every teacher
look calibrated; in-plane background around the gland stays in, since confident false positives there are
the errors that matter.

The reliability diagram bins the voxels by predicted probability (:data:`BINS` equal-width bins) and compares
each bin's mean probability with the share of foreground voxels in it; the expected calibration error is
:math:`\\mathrm{ECE} = \\sum_b (n_b / N) \\, |\\bar{p}_b - \\bar{y}_b|` (Naeini et al., AAAI 2015).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prokd.data.datalist import load_case, load_cases
from prokd.files import atomic_write_text
from prokd.infer.predict import Predictor
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.runs.folder import is_fresh, read_json
from prokd.table import FittedTable

__all__ = [
    "BINS",
    "CALIBRATION_FILE",
    "Calibration",
    "calibrate",
    "Reliability",
    "calibrate_run",
    "fit_temperature",
    "gland_logits",
    "gland_slices",
    "reliability",
    "calibration_table",
    "run_calibration",
]

BINS = 10
"""Equal-width probability bins of the reliability diagram."""

CALIBRATION_FILE = "calibration.json"
"""Where :func:`calibrate_run` writes a RUN folder's calibration."""

TEMPERATURE_RANGE = (0.05, 20.0)
"""Temperatures the fit may return; a bound reached means the data cannot place the optimum."""


@dataclass(frozen=True)
class Reliability:
    """Reliability diagram of binary probabilities.

    Attributes:
        confidence: per bin, the mean predicted foreground probability (None for an empty bin).
        frequency: per bin, the share of foreground voxels (None for an empty bin).
        counts: per bin, the number of voxels.
        ece: expected calibration error, in [0, 1].
    """

    confidence: list[float | None]
    frequency: list[float | None]
    counts: list[int]
    ece: float


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    """The reliability diagram and ECE of foreground probabilities against binary labels.

    Args:
        probs: probabilities in [0, 1], any shape.
        labels: same shape, values in {0, 1}.
        bins: number of equal-width bins on [0, 1] (the last includes 1).
    """
    probs, labels = np.asarray(probs, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
    if probs.shape != labels.shape or probs.size == 0:
        raise ValueError(f"reliability: probabilities and labels must be non-empty and alike, got {probs.size} and {labels.size}")
    index = np.minimum((probs * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p, sum_y = np.bincount(index, probs, bins), np.bincount(index, labels, bins)
    filled = counts > 0
    mean_p = np.divide(sum_p, counts, out=np.zeros(bins), where=filled)
    mean_y = np.divide(sum_y, counts, out=np.zeros(bins), where=filled)
    ece = float(np.sum(counts * np.abs(mean_p - mean_y)) / probs.size)
    return Reliability(
        confidence=[float(v) if f else None for v, f in zip(mean_p, filled)],
        frequency=[float(v) if f else None for v, f in zip(mean_y, filled)],
        counts=[int(c) for c in counts],
        ece=ece,
    )


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature :math:`T^*` minimising the mean binary cross-entropy of ``sigmoid(logits / T)``.

    The loss is convex in :math:`1 / T`, so a Newton-type search (L-BFGS on :math:`\\log(1/T)`, float64)
    finds the one minimum; the result is clipped to :data:`TEMPERATURE_RANGE`.

    Args:
        logits: foreground log-odds, any shape.
        labels: same shape, values in {0, 1}.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64).ravel()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64).ravel()
    if z.shape != y.shape or z.numel() == 0:
        raise ValueError(f"fit_temperature: logits and labels must be non-empty and alike, got {z.numel()} and {y.numel()}")
    log_inverse = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_inverse], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z * log_inverse.exp(), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    low, high = TEMPERATURE_RANGE
    return float(min(max(float(torch.exp(-log_inverse.detach())), low), high))


def gland_slices(label: np.ndarray, logit: np.ndarray) -> np.ndarray:
    """``(Z,)`` bool: the slices of a ``(Z, S, S)`` volume where the label or the prediction (``logit > 0``)
    has foreground."""
    return (label.reshape(len(label), -1).any(axis=1)) | (logit.reshape(len(logit), -1) > 0).any(axis=1)


@dataclass(frozen=True)
class Calibration:
    """A run's temperature and what it changed on the cases it was fitted on.

    Attributes:
        temperature: :math:`T^*`; divide the foreground log-odds by it.
        cases: the case ids it was fitted on.
        voxels: the number of gland-slice voxels used.
        nll_before / nll_after: mean binary cross-entropy at T = 1 and at :math:`T^*`.
        before / after: the reliability diagrams at T = 1 and at :math:`T^*`.
    """

    temperature: float
    cases: list[str]
    voxels: int
    nll_before: float
    nll_after: float
    before: Reliability
    after: Reliability

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        fields = dict(data)
        for key in ("before", "after"):
            fields[key] = Reliability(**fields[key])
        return cls(**fields)


def calibrate(logits: np.ndarray, labels: np.ndarray, cases: list[str]) -> Calibration:
    """Fit the temperature on foreground log-odds and labels (alike, any shape) and measure its effect."""
    temperature = fit_temperature(logits, labels)
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    nll = [float(F.binary_cross_entropy_with_logits(z / t, y)) for t in (1.0, temperature)]
    return Calibration(
        temperature=temperature,
        cases=cases,
        voxels=int(labels.size),
        nll_before=nll[0],
        nll_after=nll[1],
        before=reliability(torch.sigmoid(z).numpy(), labels),
        after=reliability(torch.sigmoid(z / temperature).numpy(), labels),
    )


def gland_logits(run: str | Path, data: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The foreground log-odds of a run's best checkpoint and the labels, both ``(N,)``, over the gland slices
    of its ``split`` cases, on its own grid; and those cases' ids.

    Raises:
        ValueError: the split has no cases, or none of them has a gland slice.
    """
    source = resolve_checkpoint(run, "best")
    payload = load_checkpoint(source)
    ids = list(payload["split"].get(split, []))
    if not ids:
        raise ValueError(f"{source}: the run's {split} split has no cases to calibrate on")
    predictor = Predictor.from_payload(payload, source)
    label_map = payload["config"].get("label_map")
    logits, labels = [], []
    for case in load_cases(data).select(ids):
        loaded = load_case(case, label_map, predictor.input_channel())
        grid_image, plan = predictor.prepare(loaded.image, loaded.geometry.spacing)
        logit = predictor.grid_logit(grid_image)
        label = predictor.preprocessor.label_to_grid(loaded.label, plan)
        keep = gland_slices(label, logit)
        logits.append(logit[keep].ravel())
        labels.append(label[keep].ravel())
    if not any(len(part) for part in labels):
        raise ValueError(f"{source}: no gland slice in the run's {split} cases (no label and no prediction)")
    return np.concatenate(logits), np.concatenate(labels), ids


def calibrate_run(run: str | Path, data: str | Path, split: str = "val", write: bool = True) -> Calibration:
    """Fit the temperature of a run's best checkpoint on the gland slices of its ``split`` cases (cases it never
    trained on); written to ``RUN/calibration.json`` when ``write`` is set and ``run`` is a RUN folder."""
    calibration = calibrate(*gland_logits(run, data, split))
    if write and Path(run).is_dir():
        atomic_write_text(Path(run) / CALIBRATION_FILE, json.dumps(calibration.to_dict(), indent=1) + "\n")
    return calibration


def run_calibration(run: str | Path, data: str | Path) -> Calibration:
    """A run's calibration: from ``RUN/calibration.json`` when it is newer than the best checkpoint, else fitted
    on its validation cases now (and written there)."""
    stored = Path(run) / CALIBRATION_FILE
    if is_fresh(stored, Path(run)):
        return Calibration.from_dict(read_json(stored))
    return calibrate_run(run, data)


def calibration_table(calibration: Calibration) -> FittedTable:
    """Negative log-likelihood and ECE at T = 1 and at the fitted temperature, as a table for the console."""
    table = FittedTable()
    for header in ("temperature", "NLL", "ECE"):
        table.add_column(header, justify="right")
    table.add_row("1 (as trained)", f"{calibration.nll_before:.4f}", f"{calibration.before.ece:.4f}")
    table.add_row(f"{calibration.temperature:.3f} (fitted)", f"{calibration.nll_after:.4f}", f"{calibration.after.ece:.4f}")
    return table
