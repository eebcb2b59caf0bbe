"""Qualitative results: case selection, slice choice, teacher disagreement, predictions made once."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from prokd.report import overlays
from prokd.report.folder import Experiment
from prokd.report.overlays import (
    VolumePredictions,
    disagreement_figure,
    largest_area_slice,
    overlay_figure,
    select_cases,
    slice_view,
    teacher_disagreement,
)


def test_select_cases_best_median_worst():
    assert select_cases({"a": 0.9, "b": 0.5, "c": 0.7}) == [("best", "a"), ("median", "c"), ("worst", "b")]
    # ranked a, d, c, b: the median is the upper middle one
    assert select_cases({"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.6}) == [("best", "a"), ("median", "d"), ("worst", "b")]
    assert select_cases({"a": 0.2, "b": 0.8}) == [("best", "b"), ("worst", "a")]
    assert select_cases({"only": 0.3}) == [("best", "only")]
    assert select_cases({"y": 0.5, "x": 0.5, "z": 0.1}) == [("best", "x"), ("median", "y"), ("worst", "z")]
    with pytest.raises(ValueError, match="no cases"):
        select_cases({})


def test_largest_area_slice():
    label = np.zeros((4, 5, 5), dtype=np.uint8)
    label[1, :2, :2] = 1
    label[2, :3, :3] = 1
    label[3, 1:4, 1:4] = 1  # ties with slice 2: the first wins
    assert largest_area_slice(label) == 2


def test_teacher_disagreement_is_the_per_pixel_sd():
    probs = np.array([[[0.3, 0.2], [1.0, 0.0]], [[0.3, 0.8], [1.0, 1.0]]])  # (K=2, 2, 2)
    sd = teacher_disagreement(probs)
    assert sd.shape == (2, 2)
    assert sd[0, 0] == 0 and sd[1, 0] == 0  # the teachers agree
    assert sd[0, 1] == pytest.approx(0.3) and sd[1, 1] == pytest.approx(0.5)
    three = teacher_disagreement(np.array([0.0, 0.5, 1.0])[:, None])
    assert three[0] == pytest.approx(np.sqrt(1 / 6))


def test_predictions_are_made_once_and_match_the_evaluation(experiment_dir, monkeypatch):
    experiment = Experiment.load(experiment_dir)
    row = experiment.first_seed("student-multi")
    run = experiment.run_dir(row)
    built = []
    original = overlays.Predictor.from_checkpoint
    monkeypatch.setattr(overlays.Predictor, "from_checkpoint", lambda *a: built.append(a) or original(*a))
    predictions = VolumePredictions(experiment.data)
    for case in experiment.test_cases(row):
        first = predictions.predict(run, case["case"])
        assert predictions.predict(run, case["case"]) is first
        assert predictions.dice(run, case["case"]) == pytest.approx(case["dice"], abs=1e-6)
    assert len(built) == 1


def test_overlay_and_disagreement_figures(experiment_dir):
    experiment = Experiment.load(experiment_dir)
    predictions = VolumePredictions(experiment.data)
    case_id = experiment.test_cases(experiment.rows[0])[0]["case"]
    view = slice_view("best", predictions.case(case_id))
    assert view.truth.sum() == predictions.case(case_id).label.sum(axis=(1, 2)).max()
    assert view.title.startswith(f"best: {case_id}")
    mask = np.zeros_like(view.truth)
    probs = np.stack([np.zeros(view.truth.shape), np.ones(view.truth.shape)])
    for png in (
        overlay_figure([view, view], [[("a\nDice 0.500", mask), ("b", view.truth)]] * 2),
        disagreement_figure([view], ["t1", "t2"], [probs]),
    ):
        assert png.startswith(b"\x89PNG")
        assert min(Image.open(io.BytesIO(png)).size) > 200


def test_colour_blind_safe_contours_and_colour_bars(experiment_dir, monkeypatch):
    experiment = Experiment.load(experiment_dir)
    predictions = VolumePredictions(experiment.data)
    view = slice_view("best", predictions.case(experiment.test_cases(experiment.rows[0])[0]["case"]))
    figures = []
    monkeypatch.setattr(overlays, "png_bytes", figures.append)
    overlay_figure([view], [[("a", view.truth)]])
    probs = np.stack([np.full(view.truth.shape, 0.2), np.full(view.truth.shape, 0.9)])
    disagreement_figure([view, view], ["t1", "t2"], [probs, probs])
    overlay, disagreement = figures

    def contour_colours(ax) -> set[str]:
        return {to_hex(colour) for artist in ax.collections for colour in artist.get_edgecolor()}

    truth_panel, prediction_panel = overlay.axes[1], overlay.axes[2]
    assert contour_colours(truth_panel) == {"#56b4e9"}  # Okabe–Ito sky blue
    assert contour_colours(prediction_panel) == {"#56b4e9", "#e69f00"}  # and orange
    assert overlays.TRUTH_COLOUR in overlays.CONTOUR_NOTE and overlays.PREDICTION_COLOUR in overlays.CONTOUR_NOTE
    bars = [ax for ax in disagreement.axes if ax.get_label() == "<colorbar>"]
    assert sorted(bar.get_xlabel() for bar in bars) == ["disagreement (sd)", "foreground probability"]
    assert sorted(bar.get_xlim() for bar in bars) == [(0.0, 0.5), (0.0, 1.0)]
