"""One stage's RUN folder: train it fresh, resume it or leave it finished; test evaluation (and its teachers'
ensemble's, and under the field-of-view shifts); efficiency (the stages of an experiment are timed together, in one
interleaved pass: :func:`measure_stages`).

Used by ``prokd experiment`` and by the benchmark scripts (``benchmarks/common.py``), so that a study can be
spread over several sessions: finished runs are reused and interrupted ones resumed from ``last.pt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from torch import nn

from prokd.config import RunConfig, load_config
from prokd.data.orientation import read_canonical
from prokd.eval.efficiency import count_macs, count_parameters, measure_latency
from prokd.eval.ensemble import ENSEMBLE_EVAL, evaluate_ensemble, teacher_eval
from prokd.eval.evaluate import Evaluation, evaluate_run, summary_table, write_evaluation
from prokd.eval.field_of_view_eval import field_of_view_of_run, field_of_view_table
from prokd.infer.benchmark import benchmark, load_candidates
from prokd.infer.predict import Predictor
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.train.loop import settle_run
from prokd.runs.folder import is_fresh, read_json, write_json
from prokd.train.runner import train_run

VOLUME_REPEATS = 3
"""At most this many timed whole-volume predictions per stage (the median is reported)."""


def finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has used up its epochs or its time budget."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.exists():
        return False
    payload = load_checkpoint(last)
    train, progress = payload["config"]["train"], payload["progress"]
    budget = train["time_budget_minutes"]
    return progress["epoch"] >= train["epochs"] or (budget is not None and progress["elapsed_seconds"] >= 60 * budget)


def stage_status(run_dir: Path) -> str:
    """``"done"`` (training finished), ``"resume"`` (``checkpoints/last.pt`` of an unfinished run) or ``"new"``."""
    if finished(run_dir):
        return "done"
    return "resume" if (run_dir / "checkpoints" / "last.pt").exists() else "new"


def train_stage(
    data: Path,
    run_dir: Path,
    config: RunConfig,
    split: dict[str, list[str]],
    console: Console | None = None,
    device: str = "auto",
) -> str:
    """Train ``config`` into ``run_dir`` on ``split``: resume an unfinished run, leave a finished one alone
    (but for bringing ``best.pt`` and ``metrics.jsonl`` in line with ``last.pt`` after a kill:
    :func:`~prokd.train.loop.settle_run`).

    A folder without ``last.pt`` (a run that stopped before its first epoch ended) is started afresh.

    Returns:
        the status the stage had (:func:`stage_status`).
    """
    status = stage_status(run_dir)
    if status == "done":
        settle_run(run_dir)
    elif status == "resume":
        train_run(data, run_dir, config, resume=True, console=console, device=device)
    elif status == "new":
        train_run(data, run_dir, config, split=split, overwrite=True, console=console, device=device)
    return status


def evaluate_stage(run_dir: Path, data: Path, console: Console | None = None) -> Evaluation | None:
    """Evaluate the best checkpoint on the test split, unless ``eval/test/summary.json`` is newer than it.

    Returns:
        the new evaluation, or None when the existing one is up to date.
    """
    if is_fresh(run_dir / "eval" / "test" / "summary.json", run_dir):
        return None
    evaluation = evaluate_run(run_dir, data, split="test")
    if console is not None:
        console.print(summary_table(evaluation, title=f"{run_dir.name} — test split"))
    return evaluation


def evaluate_stage_field_of_view(run_dir: Path, data: Path, console: Console | None = None) -> Evaluation | None:
    """Evaluate the best checkpoint on the run's test cases under every field-of-view shift into
    ``RUN/eval/field-of-view/`` (:func:`~prokd.eval.field_of_view_eval.field_of_view_of_run`), unless the stored
    evaluation is newer than the checkpoint.

    Returns:
        the new evaluation, or None when the existing one is up to date.
    """
    evaluation, evaluated = field_of_view_of_run(run_dir, data, read_json(run_dir / "split.json")["test"])
    if not evaluated:
        return None
    if console is not None:
        console.print(field_of_view_table(evaluation, title=f"{run_dir.name}: field of view — test split"))
    return evaluation


def evaluate_teachers_ensemble(
    run_dir: Path, data: Path, teachers: Sequence[Path], console: Console | None = None
) -> Evaluation | None:
    """Evaluate the ensemble of ``teachers`` (their RUN folders; :mod:`prokd.eval.ensemble`) on the test cases of the
    run in ``run_dir`` into ``RUN/eval/teachers-ensemble/`` (:func:`evaluate_on_test_cases`)."""
    return evaluate_on_test_cases(run_dir, data, teachers, ENSEMBLE_EVAL, "its teachers' ensemble", console)


def evaluate_teacher(run_dir: Path, data: Path, teacher: Path, console: Console | None = None) -> Evaluation | None:
    """Evaluate the teacher in ``teacher`` on the test cases of the run in ``run_dir`` (a teacher tested on other
    cases than its student's) into ``RUN/eval/teacher-<teacher's folder>/`` (:func:`evaluate_on_test_cases`)."""
    return evaluate_on_test_cases(run_dir, data, [teacher], teacher_eval(teacher.name), teacher.name, console)


def evaluate_on_test_cases(
    run_dir: Path, data: Path, runs: Sequence[Path], name: str, title: str, console: Console | None = None
) -> Evaluation | None:
    """Evaluate ``runs`` as one model (the mean of their probabilities) on the test cases of the run in ``run_dir``,
    with its label map, into ``RUN/eval/<name>/``, unless that is newer than the run's best checkpoint.

    Returns:
        the new evaluation, or None when the existing one is up to date.
    """
    out_dir = run_dir / "eval" / name
    if is_fresh(out_dir / "summary.json", run_dir):
        return None
    label_map = load_config(run_dir / "config.yaml").label_map
    evaluation = evaluate_ensemble(runs, data, read_json(run_dir / "split.json")["test"], label_map)
    write_evaluation(evaluation, out_dir, [resolve_checkpoint(run, "best") for run in runs])
    if console is not None:
        console.print(summary_table(evaluation, title=f"{run_dir.name}: {title} — test split"))
    return evaluation


def model_efficiency(model: nn.Module, input_shape: Sequence[int], threads: int, repeats: int = 30) -> dict[str, Any]:
    """Parameters, MACs and median CPU latency (ms, ``threads`` threads) of one forward pass on ``input_shape``."""
    return {
        "params": count_parameters(model),
        "macs": count_macs(model, input_shape),
        "latency_ms": measure_latency(model, input_shape, threads=threads, repeats=repeats)["median_ms"],
    }


def efficiency(run_dir: Path, size: int = 256, threads: int = 2) -> dict[str, Any]:
    """Parameters, MACs and median CPU latency for one ``1 x C x size x size`` slice (``threads`` threads)."""
    predictor = Predictor.from_checkpoint(run_dir)
    shape = (1, predictor.preprocessor.config.in_channels, size, size)
    return {**model_efficiency(predictor.model, shape, threads), "latency_input": list(shape), "threads": threads}


def measure_stages(
    run_dirs: Sequence[Path], volume: Path, threads: int, repeats: int, console: Console | None = None
) -> bool:
    """Write every stage's ``efficiency.json`` from one measurement of all of them (:func:`stages_efficiency`),
    unless each is newer than its stage's best checkpoint and was measured with these ``threads`` and
    ``repeats``. Returns whether it measured."""
    if all(_measured(run_dir, threads, repeats) for run_dir in run_dirs):
        return False
    if console is not None:
        console.rule(f"efficiency: {len(run_dirs)} models timed together, {repeats} repeats each, {threads} "
                     f"thread{'' if threads == 1 else 's'}")
    for run_dir, facts in zip(run_dirs, stages_efficiency(run_dirs, volume, threads, repeats)):
        write_json(run_dir / "efficiency.json", facts)
    return True


def _measured(run_dir: Path, threads: int, repeats: int) -> bool:
    path = run_dir / "efficiency.json"
    if not is_fresh(path, run_dir):
        return False
    facts = read_json(path)
    return (facts.get("threads"), facts.get("repeats")) == (threads, repeats)


def stages_efficiency(run_dirs: Sequence[Path], volume: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    """Each stage's ``efficiency.json``: parameters, MACs and latency of one ``1 x C x S x S`` slice on the model's
    own grid and of the whole prediction of ``volume`` as the stage predicts (with flip TTA when its config has
    it; pre- and post-processing included).

    All best checkpoints are timed in this process with ``threads`` threads by ``prokd benchmark``'s routine
    (:func:`~prokd.infer.benchmark.benchmark`, PyTorch engine): the models take turns, ``repeats`` slices per
    model, then ``min(repeats, VOLUME_REPEATS)`` volumes; medians are reported.
    """
    candidates = load_candidates(run_dirs, ["torch"], threads)
    canonical = read_canonical(volume, candidates[0].predictor.input_channel())
    image = canonical.array.astype(np.float32)
    volume_repeats = min(repeats, VOLUME_REPEATS)
    rows = benchmark(candidates, image, canonical.geometry.spacing, threads, repeats, warmup=1,
                     volume_repeats=volume_repeats)
    return [
        {
            "params": row["params"],
            "macs": row["macs"],
            "latency_slice_ms": row["ms"]["slice"]["median"],
            "latency_volume_ms": row["ms"]["volume_tta" if candidate.predictor.postprocess.flip_tta else "volume"]["median"],
            "slice_input": row["slice_input"],
            "volume_slices": int(image.shape[0]),
            "threads": threads,
            "repeats": repeats,
            "volume_repeats": volume_repeats,
        }
        for candidate, row in zip(candidates, rows)
    ]


def train_or_resume(data: Path, run_dir: Path, config: RunConfig, split: dict, console: Console) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (resume an unfinished run, reuse a finished one); return its test
    evaluation, efficiency and training facts (the benchmark scripts' record)."""
    train_stage(data, run_dir, config, split, console)
    evaluation = evaluate_run(run_dir, data, split="test")
    console.print(summary_table(evaluation, title=run_dir.name))
    progress = load_checkpoint(run_dir / "checkpoints" / "last.pt")["progress"]
    return {
        "run": str(run_dir),
        "minutes_budget": config.train.time_budget_minutes,
        "train_minutes": round(progress["elapsed_seconds"] / 60, 1),
        "steps": progress["step"],
        "best_epoch": progress["best_epoch"],
        "best_val_dice": progress["best_val_dice"],
        "summary": evaluation.summary,
        "cases": evaluation.rows,
        **efficiency(run_dir),
    }
