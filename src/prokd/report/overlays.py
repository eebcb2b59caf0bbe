"""Qualitative results: which test cases to show, the slice to show of each, the models' predictions on it
(contours over the image) and the teachers' disagreement (per-pixel sd of their foreground probabilities).

Every volume is read once and predicted once per model (:class:`VolumePredictions`), so the overlays, the
panel Dice and the disagreement maps all come from the same predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from prokd.data.datalist import LoadedCase, load_case, load_cases
from prokd.eval.metrics import dice_score
from prokd.infer.predict import Prediction, Predictor
from prokd.report.figures import png_bytes

__all__ = [
    "CONTOUR_NOTE",
    "HEAT_TRUTH_NOTE",
    "SliceView",
    "VolumePredictions",
    "disagreement_figure",
    "largest_area_slice",
    "overlay_figure",
    "select_cases",
    "slice_view",
    "teacher_disagreement",
]

TRUTH_COLOUR = "#56B4E9"  # Okabe–Ito sky blue
PREDICTION_COLOUR = "#E69F00"  # Okabe–Ito orange
HEAT_TRUTH_COLOUR = "white"  # over the viridis / magma heat maps
CONTOUR_NOTE = (
    f"Contours in Okabe–Ito colours, told apart with red-green colour blindness: ground truth sky blue "
    f"({TRUTH_COLOUR}), prediction orange ({PREDICTION_COLOUR})."
)
HEAT_TRUTH_NOTE = f"Ground truth contour in {HEAT_TRUTH_COLOUR}."
PANEL_INCHES = 2.4
MAX_SD = 0.5  # the largest possible sd of values in [0, 1]


def select_cases(dice: Mapping[str, float]) -> list[tuple[str, str]]:
    """``[("best", id), ("median", id), ("worst", id)]`` by the given per-case Dice.

    Cases are ranked by decreasing Dice (ties by case id); the median is the case at rank ``(n - 1) // 2``
    (the upper one of the middle two when n is even). A case picked twice (n < 3) is listed once, under
    its first label.
    """
    if not dice:
        raise ValueError("select_cases: no cases to choose from")
    ranked = sorted(dice, key=lambda case: (-dice[case], case))
    picks = [("best", ranked[0]), ("median", ranked[(len(ranked) - 1) // 2]), ("worst", ranked[-1])]
    chosen: dict[str, str] = {}
    for label, case in picks:
        chosen.setdefault(case, label)
    return [(label, case) for case, label in chosen.items()]


def largest_area_slice(label: np.ndarray) -> int:
    """Index of the slice of ``label`` (Z, Y, X) with the most foreground voxels (the first on ties)."""
    return int(np.argmax(label.reshape(len(label), -1).sum(axis=1)))


def teacher_disagreement(probabilities: np.ndarray) -> np.ndarray:
    """Per-pixel standard deviation (ddof 0) over the teachers of ``probabilities`` (K, ...) → (...)."""
    return np.asarray(probabilities, dtype=np.float64).std(axis=0)


class VolumePredictions:
    """Test cases read once, and each model's whole-volume prediction of each case made once.

    Args:
        data: the dataset (datalist, folder with ``dataset.json``, or MSD/nnU-Net folder).
        label_map: the label map the runs were trained with.
        channel: the channel of multi-channel images the runs were trained on.
    """

    def __init__(self, data: Path, label_map: dict[int, int] | None = None, channel: int | None = None) -> None:
        self.index = load_cases(data)
        self.label_map = label_map
        self.channel = channel
        self._cases: dict[str, LoadedCase] = {}
        self._predictors: dict[Path, Predictor] = {}
        self._predictions: dict[tuple[Path, str], Prediction] = {}

    def case(self, case_id: str) -> LoadedCase:
        if case_id not in self._cases:
            self._cases[case_id] = load_case(self.index.case(case_id), self.label_map, self.channel)
        return self._cases[case_id]

    def predict(self, run: Path, case_id: str) -> Prediction:
        """The best checkpoint of ``run``'s prediction of the whole case, on its original grid."""
        if run not in self._predictors:
            self._predictors[run] = Predictor.from_checkpoint(run, "best")
        key = (run, case_id)
        if key not in self._predictions:
            loaded = self.case(case_id)
            self._predictions[key] = self._predictors[run].predict(loaded.image, loaded.geometry.spacing)
        return self._predictions[key]

    def dice(self, run: Path, case_id: str) -> float:
        """3D Dice of ``run``'s prediction of the case against its label."""
        return dice_score(self.predict(run, case_id).mask, self.case(case_id).label)


@dataclass
class SliceView:
    """The slice shown of one case.

    Attributes:
        title: the row's title (pick, case, site, slice).
        case_id: the case.
        index: the slice index z.
        image: (Y, X) intensities.
        truth: (Y, X) ground truth in {0, 1}.
        aspect: row / column spacing, for an undistorted display (1 when the spacing is unknown).
    """

    title: str
    case_id: str
    index: int
    image: np.ndarray
    truth: np.ndarray
    aspect: float


def slice_view(pick: str, loaded: LoadedCase) -> SliceView:
    """The slice with the largest true area of a labeled case."""
    z = largest_area_slice(loaded.label)
    spacing = loaded.geometry.spacing
    aspect = 1.0 if spacing is None else float(spacing[1] / spacing[2])
    title = f"{pick}: {loaded.case.case_id} ({loaded.case.site}), slice {z}"
    return SliceView(title, loaded.case.case_id, z, loaded.image[z], loaded.label[z], aspect)


def overlay_figure(views: Sequence[SliceView], predictions: Sequence[Sequence[tuple[str, np.ndarray]]]) -> bytes:
    """One row per case: the image, the ground truth (contour in :data:`TRUTH_COLOUR`), then each model's
    prediction (contour in :data:`PREDICTION_COLOUR`, truth thin), titled as given (e.g. with the model's Dice
    on the case).

    Args:
        views: the slices shown.
        predictions: per view, ``(panel title, (Y, X) mask)`` for each model, in the same order on every row.
    """
    columns = 2 + max(len(row) for row in predictions)
    figure, axes = _grid(len(views), columns)
    for r, (view, row) in enumerate(zip(views, predictions)):
        _show(axes[r, 0], view, "image")
        _show(axes[r, 1], view, "ground truth")
        _contour(axes[r, 1], view.truth, TRUTH_COLOUR, 2.0)
        for c, (title, mask) in enumerate(row, start=2):
            _show(axes[r, c], view, title)
            _contour(axes[r, c], view.truth, TRUTH_COLOUR, 1.0)
            _contour(axes[r, c], mask, PREDICTION_COLOUR, 1.5)
        axes[r, 0].set_ylabel(view.title, fontsize=9)
    return png_bytes(figure)


def disagreement_figure(
    views: Sequence[SliceView], teachers: Sequence[str], probabilities: Sequence[np.ndarray]
) -> bytes:
    """One row per case: each teacher's foreground probability, then the teachers' disagreement (per-pixel
    sd), as heat maps over the image with the ground truth as a :data:`HEAT_TRUTH_COLOUR` contour; one colour
    bar below the probabilities and one below the disagreement.

    Args:
        views: the slices shown.
        teachers: the K teacher names.
        probabilities: per view, the teachers' probabilities (K, Y, X) on that slice.
    """
    figure, axes = _grid(len(views), len(teachers) + 1)
    for r, (view, probs) in enumerate(zip(views, probabilities)):
        for k, name in enumerate(teachers):
            probability = _heat(axes[r, k], view, probs[k], f"{name}\nforeground probability", "viridis", 1.0)
        sd = teacher_disagreement(probs)
        disagreement = _heat(axes[r, -1], view, sd, f"disagreement (sd)\nmax {sd.max():.2f}", "magma", MAX_SD)
        axes[r, 0].set_ylabel(view.title, fontsize=9)
    figure.colorbar(probability, ax=axes[:, :-1], location="bottom", shrink=0.5, label="foreground probability")
    figure.colorbar(disagreement, ax=axes[:, -1], location="bottom", label="disagreement (sd)")
    return png_bytes(figure)


def _grid(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.4), layout="constrained")
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    return figure, axes


def _show(ax: Axes, view: SliceView, title: str) -> None:
    """The slice in grey (1st-99th percentile window), axes off except the row label."""
    low, high = np.percentile(view.image, [1, 99])
    ax.imshow(view.image, cmap="gray", vmin=low, vmax=high, aspect=view.aspect, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _contour(ax: Axes, mask: np.ndarray, colour: str, width: float) -> None:
    if mask.any():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linewidths=width)


def _heat(ax: Axes, view: SliceView, values: np.ndarray, title: str, cmap: str, vmax: float):
    _show(ax, view, title)
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, alpha=0.6, aspect=view.aspect, interpolation="nearest")
    _contour(ax, view.truth, HEAT_TRUTH_COLOUR, 0.8)
    return image
