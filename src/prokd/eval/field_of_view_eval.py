"""The field-of-view protocol on a trained run: 3D Dice of each test (or validation) case under every shift of
:data:`~prokd.eval.field_of_view.FIELD_OF_VIEW_CURVE`, and the ceiling.

Each case is shifted (cropped, padded or resampled in-plane), predicted as ``prokd predict`` would (the run's own
preprocessing, flip TTA, largest component), and the mask mapped back to the original grid
(:meth:`~prokd.eval.field_of_view.FieldOfView.restore`) is scored against the label there. The *ceiling* is the
Dice of the label itself after the same shift and way back: what a crop cuts off, or a coarser grid blurs, before
any model is involved (1 for the original, the pads and the finer grid).

A run's evaluation on its test cases is written to ``RUN/eval/field-of-view/`` (:data:`FIELD_OF_VIEW_EVAL`; on its
validation cases to ``RUN/eval/field-of-view-val/``, where a post-processing rule is chosen) like its other
evaluations (:func:`~prokd.eval.evaluate.write_evaluation`): ``cases.csv``, one row per case and shift (``case``,
``site``, ``shift``, ``dice``, ``ceiling``), and ``summary.json`` naming the checkpoint, with ``summary``
``{shift name: {"dice" | "ceiling": {"mean", "sd", "n"}}}`` over the cases, shifts in the order of the curve. It is
reused while newer than the run's best checkpoint and of the same cases.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prokd.data.datalist import LoadedCase, load_case, load_cases
from prokd.eval.evaluate import Evaluation, stored_summary, write_evaluation
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE
from prokd.eval.metrics import dice_score, format_stats, summarize
from prokd.infer.framing import extent_range
from prokd.infer.predict import Predictor
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.table import FittedTable

__all__ = [
    "FIELD_OF_VIEW_EVAL",
    "FIELD_OF_VIEW_TARGET",
    "case_rows",
    "eval_name",
    "evaluate_field_of_view",
    "field_of_view_of_run",
    "field_of_view_table",
    "largest_drop",
    "stored_field_of_view",
    "training_gland_extents",
    "within_target",
]

FIELD_OF_VIEW_EVAL = "field-of-view"
"""``RUN/eval/<this>/``: where a run's field-of-view evaluation on its test cases is written (``<this>-val/`` on its
validation cases)."""
FIELD_OF_VIEW_TARGET = 2.0
"""The protocol's target (issue 13): 3D Dice within this many points (Dice × 100) of the original at every shift."""
SCORES = ("dice", "ceiling")
"""What each case is scored by under each shift: the prediction's Dice, and the label's own (the ceiling)."""


def evaluate_field_of_view(
    predictor: Predictor,
    data: str | Path,
    case_ids: Sequence[str],
    label_map: dict[int, int] | None = None,
    channel: int | None = None,
    split: str = "test",
) -> Evaluation:
    """Score ``predictor`` on the labeled cases ``case_ids`` of ``data`` under every shift of the curve.

    Args:
        predictor: segments a raw volume ``(Z, Y', X')`` with its spacing (a ``Predictor`` or an ``Ensemble``).
        label_map: maps the labels of ``data`` to {0, 1}.
        channel: the channel of multi-channel images; by default the predictor's.
        split: the name of the split the cases belong to, as the evaluation's.

    Returns:
        ``split``, one row per case and shift (``case``, ``site``, ``shift``, ``dice``, ``ceiling``; cases in
        the given order, shifts in the curve's), and the summary over the cases per shift.
    """
    index = load_cases(data)
    channel = predictor.input_channel(channel)
    rows = [row for case in index.select(case_ids) for row in case_rows(predictor, load_case(case, label_map, channel))]
    return Evaluation(split, rows, shift_summary(rows))


def case_rows(predictor: Predictor, loaded: LoadedCase) -> list[dict[str, Any]]:
    """One row per shift of one case: 3D Dice of the prediction and of the label itself, both mapped back to the
    original grid ``(Z, Y, X)`` and scored against the label there."""
    image, label, spacing = loaded.image, loaded.label, loaded.geometry.spacing
    rows = []
    for shift in FIELD_OF_VIEW_CURVE:
        mask = predictor.predict(shift.apply(image), shift.spacing(spacing)).mask
        ceiling = shift.apply(label, label=True)
        rows.append({
            "case": loaded.case.case_id,
            "site": loaded.case.site,
            "shift": shift.name,
            "dice": dice_score(shift.restore(mask, image.shape), label),
            "ceiling": dice_score(shift.restore(ceiling, label.shape), label),
        })
    return rows


def shift_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{shift name: {"dice" | "ceiling": {"mean", "sd", "n"}}}`` over the cases, shifts in the curve's order."""
    return {
        shift.name: summarize([row for row in rows if row["shift"] == shift.name], SCORES, by=None)["overall"]
        for shift in FIELD_OF_VIEW_CURVE
    }


def field_of_view_of_run(
    run: str | Path,
    data: str | Path,
    case_ids: Sequence[str],
    postprocess: dict[str, Any] | None = None,
    split: str = "test",
) -> tuple[Evaluation, bool]:
    """The field-of-view evaluation of the best checkpoint of the RUN folder ``run`` on the cases ``case_ids`` of
    ``data`` (with the run's label map): the stored one (:func:`stored_field_of_view`), else evaluated now and
    written to ``RUN/eval/<eval_name(postprocess, split)>/``.

    Args:
        postprocess: keys of the run's ``postprocess`` to predict with instead, e.g. ``{"relocate": 2}`` (passes of
            locate-then-segment) or ``{"framings": [0.5, 1, 2]}`` (:mod:`prokd.infer.framing`). With ``relocate``,
            a run trained before locate-then-segment gets its range of gland extents measured now on its training
            cases, as training does (:func:`training_gland_extents`).
        split: the split ``case_ids`` belong to (``"test"`` or ``"val"``), stored apart.

    Returns:
        the evaluation, and whether it was evaluated now (False: the stored one).
    """
    name = eval_name(postprocess, split)
    stored = stored_field_of_view(run, case_ids, name, split)
    if stored is not None:
        return stored, False
    checkpoint = resolve_checkpoint(run, "best")
    payload = load_checkpoint(checkpoint)
    predictor = Predictor.from_payload(payload, checkpoint)
    label_map = payload["config"].get("label_map")
    if postprocess:
        predictor.postprocess = dataclasses.replace(predictor.postprocess, **postprocess)
    if predictor.postprocess.relocate and predictor.postprocess.gland_extents is None:
        extents = training_gland_extents(predictor, data, payload)
        predictor.postprocess = dataclasses.replace(predictor.postprocess, gland_extents=extents)
    evaluation = evaluate_field_of_view(predictor, data, case_ids, label_map, split=split)
    write_evaluation(evaluation, Path(run) / "eval" / name, checkpoint)
    return evaluation, True


def eval_name(postprocess: dict[str, Any] | None = None, split: str = "test") -> str:
    """The folder under ``RUN/eval/`` of a field-of-view evaluation: :data:`FIELD_OF_VIEW_EVAL` on the test cases as
    the run predicts, followed by ``-<split>`` for another split and ``-<key>-<value>`` for each post-processing key
    imposed (``field-of-view-relocate-2``, ``field-of-view-val-framings-0.5-1-2``)."""
    parts = [FIELD_OF_VIEW_EVAL, *([split] if split != "test" else [])]
    for key, value in (postprocess or {}).items():
        parts += [key, *(f"{v:g}" for v in (value if isinstance(value, (list, tuple)) else [value]))]
    return "-".join(parts)


def training_gland_extents(predictor: Predictor, data: str | Path, payload: dict[str, Any]) -> tuple[float, float]:
    """The range of gland extents on the grid over the training cases a checkpoint's split lists (read with its
    label map), measured with its preprocessing (:func:`~prokd.infer.framing.extent_range`): what training stores since locate-then-segment
    for a run with labeled training cases (a run without them stores its teachers' range instead).

    Raises:
        ValueError: none of those cases has a gland (or the run had no training cases).
    """
    preprocessor, index = predictor.preprocessor, load_cases(data)
    labels = []
    for case in index.select(payload["split"]["train"]):
        loaded = load_case(case, payload["config"].get("label_map"), predictor.input_channel())
        labels.append(preprocessor.label_to_grid(loaded.label, preprocessor.plan(loaded.label.shape,
                                                                                  loaded.geometry.spacing)))
    extents = extent_range(labels)
    if extents is None:
        raise ValueError(f"{data}: no training case of the run has a gland to measure the range of extents on")
    return extents


def stored_field_of_view(
    run: str | Path, case_ids: Sequence[str], name: str = FIELD_OF_VIEW_EVAL, split: str = "test"
) -> Evaluation | None:
    """The evaluation (of ``split``) in ``RUN/eval/<name>/`` if it is newer than the run's best checkpoint and scored
    the cases ``case_ids``, else None."""
    summary = stored_summary(run, name)
    if summary is None:
        return None
    with (Path(run) / "eval" / name / "cases.csv").open(newline="") as handle:
        rows = [{**row, **{score: float(row[score]) for score in SCORES}} for row in csv.DictReader(handle)]
    if {row["case"] for row in rows} != set(case_ids):
        return None
    return Evaluation(split, rows, summary)


def largest_drop(dice: dict[str, float]) -> tuple[str, float]:
    """The shift whose Dice falls furthest below the original's, and the change in points (Dice × 100; positive
    when every shift scores above the original).

    Args:
        dice: ``{shift name: Dice}``, ``original`` and at least one shift.
    """
    shifts = [name for name in dice if name != "original"]
    worst = min(shifts, key=dice.__getitem__)
    return worst, 100 * (dice[worst] - dice["original"])


def within_target(dice: dict[str, float]) -> bool:
    """Whether no shift of ``{shift name: Dice}`` falls more than :data:`FIELD_OF_VIEW_TARGET` points below the
    original."""
    return largest_drop(dice)[1] >= -FIELD_OF_VIEW_TARGET


def field_of_view_table(evaluation: Evaluation, title: str) -> FittedTable:
    """One row per shift: the Dice and the ceiling, mean ± sd over the cases."""
    table = FittedTable(title=title)
    table.add_column("shift")
    for header in ("Dice", "ceiling"):
        table.add_column(header, justify="right")
    for shift, stats in evaluation.summary.items():
        table.add_row(shift, *(format_stats(stats[score]) for score in SCORES))
    return table
