"""The field-of-view protocol on a run: per case and shift, against the ordinary test evaluation; the ceiling;
stored in ``RUN/eval/field-of-view/`` (with locate-then-segment beside it) and reused while newer than the
checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from prokd.data.datalist import Case, LoadedCase
from prokd.data.io import Geometry
from prokd.eval.evaluate import evaluate_predictor
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE
from prokd.eval.field_of_view_eval import (
    case_rows,
    eval_name,
    field_of_view_of_run,
    largest_drop,
    training_gland_extents,
)
from prokd.infer.predict import Prediction, Predictor
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.train.runner import train_run

SHIFTS = [shift.name for shift in FIELD_OF_VIEW_CURVE]


@pytest.fixture(scope="module")
def run(phantom_data, tmp_path_factory, tiny_config):
    """A unet-tiny run trained for 20 steps on the phantom (64² grid), predicting without flip TTA (half the time)."""
    config = tiny_config(epochs=2, steps_per_epoch=10)
    config.model.name = "unet-tiny"
    config.postprocess.flip_tta = False
    folder = tmp_path_factory.mktemp("fov") / "run"
    train_run(phantom_data, folder, config)
    return folder


def test_the_original_shift_is_the_test_evaluation_and_the_result_is_reused_while_fresh(run, phantom_data):
    test_cases = json.loads((run / "split.json").read_text())["test"][:2]
    evaluation, computed = field_of_view_of_run(run, phantom_data, test_cases)
    assert computed and [(row["case"], row["shift"]) for row in evaluation.rows] == [
        (case, shift) for case in test_cases for shift in SHIFTS
    ]
    predictor = Predictor.from_checkpoint(run)
    ordinary = evaluate_predictor(predictor, phantom_data, "test", {"test": test_cases}, None, None, run)
    original = {row["case"]: row["dice"] for row in evaluation.rows if row["shift"] == "original"}
    assert original == {row["case"]: row["dice"] for row in ordinary.rows}  # same predictor and cases, same Dice
    assert 0 < min(original.values())
    ceiling = {shift: [row["ceiling"] for row in evaluation.rows if row["shift"] == shift] for shift in SHIFTS}
    assert all(value == 1.0 for shift in ("original", "pad 1.5x", "pad 2x", "resample 2x") for value in ceiling[shift])
    assert all(0 < value <= 1 for value in ceiling["crop 0.6x"] + ceiling["resample 0.5x"])
    assert list(evaluation.summary) == SHIFTS
    assert evaluation.summary["original"]["dice"]["mean"] == pytest.approx(np.mean(list(original.values())))
    assert evaluation.summary["pad 2x"]["ceiling"] == {"mean": 1.0, "sd": 0.0, "n": 2}

    out = run / "eval" / "field-of-view"
    stored = json.loads((out / "summary.json").read_text())
    assert stored["checkpoint"] == str(run / "checkpoints" / "best.pt") and stored["summary"] == evaluation.summary
    again, computed = field_of_view_of_run(run, phantom_data, test_cases)
    assert not computed and again.rows == evaluation.rows and again.summary == evaluation.summary
    _, computed = field_of_view_of_run(run, phantom_data, test_cases[:1])  # other cases: evaluated again
    assert computed and not field_of_view_of_run(run, phantom_data, test_cases[:1])[1]

    older = (run / "checkpoints" / "best.pt").stat().st_mtime_ns - 10**9
    os.utime(out / "summary.json", ns=(older, older))  # an evaluation of an older checkpoint (best.pt is not moved
    # into the future: the module's other tests share this run and write their own evaluations after it)
    _, computed = field_of_view_of_run(run, phantom_data, test_cases[:1])
    assert computed


class Thresholded:
    """A stand-in model: the image's bright voxels (``image > 50``) as the mask."""

    def predict(self, image: np.ndarray, spacing) -> Prediction:
        return Prediction(image.astype(np.float32) / 100, (image > 50).astype(np.uint8))


def test_the_ceiling_is_what_a_crop_cuts_off():
    """A gland filling every slice ``(3, 40, 50)``: the 0.6x crop keeps its centre ``24 × 30``."""
    label = np.ones((3, 40, 50), np.uint8)
    case = Case("c0", Path("c0.nii.gz"), Path("c0_label.nii.gz"), "SiteA")
    loaded = LoadedCase(case, 100 * label.astype(np.float32), label, Geometry(spacing=(3.0, 0.5, 0.5)))
    rows = {row["shift"]: row for row in case_rows(Thresholded(), loaded)}
    kept = 24 * 30
    assert rows["crop 0.6x"]["ceiling"] == pytest.approx(2 * kept / (kept + 40 * 50))
    assert rows["crop 0.6x"]["dice"] == pytest.approx(rows["crop 0.6x"]["ceiling"])
    assert all(rows[shift]["ceiling"] == 1.0 and rows[shift]["dice"] == 1.0 for shift in SHIFTS if shift != "crop 0.6x")
    assert {row["case"] for row in rows.values()} == {"c0"} and {row["site"] for row in rows.values()} == {"SiteA"}


def test_the_largest_drop_names_the_worst_shift_in_points():
    assert largest_drop({"crop 0.6x": 0.70, "original": 0.876, "pad 2x": 0.397}) == ("pad 2x", pytest.approx(-47.9))
    assert largest_drop({"original": 0.8, "resample 2x": 0.81}) == ("resample 2x", pytest.approx(1.0))


def test_locate_then_segment_is_stored_apart_with_the_range_training_stored(run, phantom_data):
    test_cases = json.loads((run / "split.json").read_text())["test"][:1]
    stored = load_checkpoint(resolve_checkpoint(run, "best"))
    predictor = Predictor.from_payload(stored)
    assert training_gland_extents(predictor, phantom_data, stored) == pytest.approx(
        stored["postprocess"]["gland_extents"])  # measured again from the split's training cases: the same range
    relocated, computed = field_of_view_of_run(run, phantom_data, test_cases, {"relocate": 2})
    assert computed and eval_name({"relocate": 2}) == "field-of-view-relocate-2"
    assert (run / "eval" / "field-of-view-relocate-2" / "summary.json").is_file()
    assert [(row["case"], row["shift"]) for row in relocated.rows] == [(test_cases[0], shift) for shift in SHIFTS]
    assert not field_of_view_of_run(run, phantom_data, test_cases, {"relocate": 2})[1]


def test_a_framing_search_is_stored_apart_under_its_zooms(run, phantom_data):
    test_cases = json.loads((run / "split.json").read_text())["test"][:1]
    assert eval_name({"framings": [0.5, 1.0, 2.0]}) == "field-of-view-framings-0.5-1-2"
    searched, computed = field_of_view_of_run(run, phantom_data, test_cases, {"framings": [0.5, 1.0, 2.0]})
    assert computed and (run / "eval" / "field-of-view-framings-0.5-1-2" / "summary.json").is_file()
    plain, _ = field_of_view_of_run(run, phantom_data, test_cases)
    assert [row["shift"] for row in searched.rows] == [row["shift"] for row in plain.rows] == SHIFTS


def test_validation_cases_are_stored_apart_under_their_split(run, phantom_data):
    val_cases = json.loads((run / "split.json").read_text())["val"][:1]
    assert eval_name({"framings": [0.5, 1.0]}, "val") == "field-of-view-val-framings-0.5-1"
    evaluation, computed = field_of_view_of_run(run, phantom_data, val_cases, split="val")
    assert computed and evaluation.split == "val" and {row["case"] for row in evaluation.rows} == set(val_cases)
    assert (run / "eval" / "field-of-view-val" / "summary.json").is_file()
    again, computed = field_of_view_of_run(run, phantom_data, val_cases, split="val")
    assert not computed and again.split == "val" and again.rows == evaluation.rows
