"""Report plots: the Pareto front on hand-made points, curves from metrics logs, figures as PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prokd.eval.calibration import calibrate
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE
from prokd.report.figures import (
    Curve,
    GroupPoint,
    dice_latency,
    field_of_view_curves,
    group_colours,
    pareto_front,
    reliability_diagrams,
    site_dice_bars,
    training_curves,
)


def decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png))


def test_pareto_front_keeps_the_undominated_points_fastest_first():
    latency = [1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 5.0]
    dice = [0.50, 0.70, 0.60, 0.90, 0.70, 0.65, 0.90]
    # 2 is beaten by 1 (faster and better), 5 by 1 (as fast, better), 6 by 3 (faster, as good); 1 and 4 tie
    assert pareto_front(latency, dice) == [0, 1, 4, 3]
    assert pareto_front([3.0], [0.1]) == [0]
    assert pareto_front([1.0, 2.0, 3.0], [0.9, 0.8, 0.7]) == [0]
    with pytest.raises(ValueError, match="2 latencies but 1"):
        pareto_front([1.0, 2.0], [0.5])


def test_curve_from_log_keeps_validation_only_where_logged():
    records = [
        {"epoch": 1, "loss": 1.0},
        {"epoch": 2, "loss": 0.8, "val_dice": 0.5},
        {"epoch": 3, "loss": 0.6},
        {"epoch": 4, "loss": 0.5, "val_dice": 0.7},
    ]
    curve = Curve.from_log("student", 1, records)
    assert curve.epochs == [1, 2, 3, 4] and curve.loss == [1.0, 0.8, 0.6, 0.5]
    assert curve.val_epochs == [2, 4] and curve.val_dice == [0.5, 0.7]


def test_group_colours_are_distinct_and_stable():
    names = [f"g{i}" for i in range(10)]
    colours = group_colours(names)
    assert len(set(colours.values())) == 10
    assert group_colours(names[:3]) == {name: colours[name] for name in names[:3]}


def test_figures_render_to_png():
    colours = group_colours(["a", "b"])
    log = [{"epoch": e, "loss": 1 / e, "val_dice": 0.1 * e} for e in range(1, 4)]
    runs = [Curve.from_log("a", 0, log), Curve.from_log("a", 1, log), Curve.from_log("b", 0, log)]
    curves = training_curves(runs, colours)
    points = dice_latency([GroupPoint("a", 20.0, 0.8, 0.02), GroupPoint("b", 2.0, 0.7, 0.05)], colours)
    mean = np.array([[0.8, np.nan], [0.7, 0.6]])
    bars = site_dice_bars(["a", "b"], ["X", "Y"], mean, np.zeros_like(mean), colours)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-logits / 2))).astype(np.uint8)
    diagrams = reliability_diagrams(["t1", "t2", "t3"], [calibrate(logits, labels, ["case"])] * 3)
    shifts = [shift.name for shift in FIELD_OF_VIEW_CURVE]
    fov = field_of_view_curves({"a": dict.fromkeys(shifts, 0.8), "b": dict.fromkeys(shifts, 0.6)},
                               {"ceiling": dict.fromkeys(shifts, 1.0)}, colours)
    for png in (curves, points, bars, diagrams, fov):
        width, height = decode(png).size
        assert width > 400 and height > 250
