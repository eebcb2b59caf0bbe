"""Evaluate a trained run on a split: per-case 3D metrics, per-site and overall summaries, CSV + JSON.

Outputs go to ``RUN/eval/<split>/cases.csv`` and ``RUN/eval/<split>/summary.json``; they are derived data
and are replaced when the same split is evaluated again.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from prokd.data.datalist import load_case, load_cases
from prokd.eval.metrics import case_metrics, format_stats, summarize
from prokd.files import atomic_write_text
from prokd.infer.predict import Predictor
from prokd.table import FittedTable
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.runs.folder import is_fresh, read_json, write_json

SPLITS = ("train", "val", "test", "all")
METRICS = ("dice", "iou", "hd95", "assd")
METRIC_NAMES = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "assd": "ASSD"}
DISTANCES = ("hd95", "assd")


@dataclass
class Evaluation:
    """Per-case rows and the ``summarize`` output (per site and ``overall``)."""

    split: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def evaluate_run(
    run: str | Path,
    data: str | Path,
    split: str = "test",
    which: str = "best",
    write: bool = True,
    label_map: dict[int, int] | None = None,
    channel: int | None = None,
    threads: int | None = None,
) -> Evaluation:
    """Predict every case of ``split`` (case ids stored in the checkpoint, or in the metadata of an ``.onnx`` file
    from ``prokd export``) and score it against its label.

    ``label_map`` maps the labels of ``data`` to {0, 1} (e.g. ``{1: 1, 2: 1}``: zonal masks → whole gland); by
    default the run's own ``label_map``. ``channel`` picks the channel of multi-channel images; by default the
    run's own ``preprocess.channel``. Cases are scored in the canonical orientation (distances do not change).
    ``threads``: ONNX Runtime's threads for an ``.onnx`` file. Results are written to ``RUN/eval/<split>/`` when
    ``run`` is a RUN folder and ``write`` is set.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if Path(run).suffix == ".onnx":
        from prokd.infer.export import load_onnx_predictor

        predictor = load_onnx_predictor(run, threads)
        source, stored_split = Path(run), predictor.model.stored("split")
        stored_map = {int(value): int(target) for value, target in (predictor.model.stored("label_map") or {}).items()}
    else:
        source = resolve_checkpoint(run, which)
        payload = load_checkpoint(source)
        predictor = Predictor.from_payload(payload, source)
        stored_split, stored_map = payload["split"], payload["config"].get("label_map")
    evaluation = evaluate_predictor(predictor, data, split, stored_split, label_map or stored_map or None, channel, source)
    if write and Path(run).is_dir():
        write_evaluation(evaluation, Path(run) / "eval" / split, source)
    return evaluation


def evaluate_predictor(
    predictor: Predictor,
    data: str | Path,
    split: str,
    case_ids: dict[str, list[str]],
    label_map: dict[int, int] | None,
    channel: int | None,
    source: Path,
) -> Evaluation:
    """Score ``predictor`` on the cases of ``split`` (ids per split in ``case_ids``; ``all``: every labeled case
    of ``data``); ``source`` names the model in errors."""
    index = load_cases(data)
    ids = [c.case_id for c in index.labeled] if split == "all" else case_ids[split]
    if not ids:
        raise ValueError(f"{source}: the run's {split} split has no cases")
    channel = predictor.input_channel(channel)
    rows = [_evaluate_case(predictor, load_case(case, label_map, channel)) for case in index.select(ids)]
    return Evaluation(split, rows, summarize(rows, metrics=METRICS, by="site"))


def _evaluate_case(predictor: Predictor, loaded) -> dict[str, Any]:
    started = time.perf_counter()
    prediction = predictor.predict(loaded.image, loaded.geometry.spacing)
    seconds = time.perf_counter() - started
    metrics = case_metrics(prediction.mask, loaded.label, loaded.geometry.spacing)
    return {"case": loaded.case.case_id, "site": loaded.case.site, **metrics, "seconds": round(seconds, 3)}


def stored_summary(run: str | Path, split: str) -> dict[str, Any] | None:
    """The ``summarize`` output stored in ``RUN/eval/<split>/summary.json`` if it is newer than the run's best
    checkpoint, else None (no evaluation yet, or one of an older checkpoint)."""
    path = Path(run) / "eval" / split / "summary.json"
    return read_json(path)["summary"] if is_fresh(path, Path(run)) else None


def write_evaluation(evaluation: Evaluation, out_dir: Path, checkpoint: Path | Sequence[Path]) -> None:
    """``out_dir/cases.csv`` and ``out_dir/summary.json``, which names the checkpoint evaluated (or the
    checkpoints of an ensemble); each written atomically, ``summary.json`` last (what :func:`stored_summary` and
    :func:`~prokd.runs.folder.is_fresh` look at)."""
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(evaluation.rows[0]))
    writer.writeheader()
    writer.writerows(evaluation.rows)
    atomic_write_text(out_dir / "cases.csv", table.getvalue())
    write_json(
        out_dir / "summary.json",
        {"split": evaluation.split, "checkpoint": str(checkpoint) if isinstance(checkpoint, Path) else
         [str(path) for path in checkpoint], "summary": evaluation.summary},
    )


def summary_table(evaluation: Evaluation, title: str | None = None) -> FittedTable:
    """One row per site plus ``overall``, mean ± sd of each metric (``(n = 1)`` for a single case)."""
    unit = evaluation.rows[0]["distance_unit"] if evaluation.rows else "px"
    table = FittedTable(title=title or f"{evaluation.split} split")
    table.add_column("site")
    table.add_column("n", justify="right")
    for metric in METRICS:
        table.add_column(_metric_header(metric, unit), justify="right")
    for group, stats in evaluation.summary.items():
        cells = [format_stats(stats[m]) for m in METRICS]
        table.add_row(group, str(stats[METRICS[0]]["n"]), *cells, style="bold" if group == "overall" else None)
    return table


def print_cases(evaluation: Evaluation, console: Console) -> None:
    unit = evaluation.rows[0]["distance_unit"] if evaluation.rows else "px"
    table = FittedTable(title="per case")
    table.add_column("case")
    table.add_column("site")
    for metric in METRICS:
        table.add_column(_metric_header(metric, unit), justify="right")
    for row in evaluation.rows:
        table.add_row(row["case"], row["site"], *(f"{row[m]:.3f}" for m in METRICS))
    console.print(table)


def _metric_header(metric: str, unit: str) -> str:
    """``"Dice"``, ``"HD95 (mm)"``."""
    return f"{METRIC_NAMES[metric]} ({unit})" if metric in DISTANCES else METRIC_NAMES[metric]
