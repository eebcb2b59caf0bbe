"""``prokd experiment``: every stage of an experiment into one folder, resumable, then the results tables.

The folder (the contract with ``prokd report``, see ``docs/architecture.md``)::

    DIR/experiment.yaml  plan.json  runs/<stage>/ (RUN folder + efficiency.json)  results/results.{json,csv,md}

A stage whose training is finished is skipped, an interrupted one resumed from ``checkpoints/last.pt``; its
test evaluation is recomputed only when older than its best checkpoint. Once every stage is trained, all the
models are timed together in one interleaved pass, when any stage's efficiency is older than its best
checkpoint (:func:`~prokd.experiment.stages.measure_stages`). So an experiment can be stopped at any time and
continued with the same command. An experiment can also grow: entries may be added
or removed between runs, but a stage already trained in the folder must keep its recipe (run config and
split) and the experiment its data and split; otherwise the folder is refused, naming the stage and the first
differing key, unless ``overwrite`` replaces it, which it does only for an experiment folder
(:data:`EXPERIMENT_FOLDER`), once the config and the plan are validated.

Several workers can share one folder (processes on one machine, or cluster jobs on a shared file system, each
``prokd experiment CONFIG --out DIR`` with or without ``--stage NAME``): a worker trains a stage only while it
holds the stage's lock ``runs/<stage>.lock`` (:mod:`prokd.runs.lock`), takes the next stage it may train when
another worker holds one, and waits for a teacher another worker is still training. The stages are timed
together by whichever worker finds every stage trained (under ``runs/efficiency.lock``).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from prokd.config import RunConfig, first_difference
from prokd.distributed import resolve_device
from prokd.eval.efficiency import format_count, format_ms
from prokd.data.datalist import load_cases
from prokd.experiment.config import ExperimentConfig
from prokd.experiment.estimate import format_duration, stage_seconds
from prokd.experiment.plan import Stage, make_plan
from prokd.experiment.results import (
    COMPARISON_NOTE,
    budget_text,
    collect_results,
    comparison_table,
    format_stats,
    write_results,
)
from prokd.experiment.stages import (
    evaluate_stage,
    evaluate_stage_field_of_view,
    evaluate_teacher,
    evaluate_teachers_ensemble,
    measure_stages,
    stage_status,
    train_stage,
)
from prokd.table import FittedTable
from prokd.runs.folder import (
    FolderKind,
    RunDirError,
    check_replaceable,
    delete_for_overwrite,
    first_missing,
    read_json,
    removed_on_failure,
    write_json,
)
from prokd.runs.lock import lock_holder, try_lock
from prokd.files import atomic_write_text, temporary_of

STATUS_TEXT = {"done": "trained, reused", "resume": "resuming", "new": "training"}
POLL_SECONDS = 10.0
"""How often a worker waiting for another worker's teacher looks again."""
EXPERIMENT_FOLDER = FolderKind("prokd experiment folder", markers=("experiment.yaml", "plan.json"),
                               optional=("runs", "results", "report"))
"""An experiment folder: ``experiment.yaml`` and ``plan.json`` (written first) beside ``runs/``, ``results/`` and
``report/`` only."""


def run_experiment(
    config: ExperimentConfig,
    out: str | Path,
    dry_run: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
    stages: list[str] | None = None,
    device: str = "auto",
    poll_seconds: float = POLL_SECONDS,
) -> dict[str, Any] | None:
    """Train, evaluate and measure every stage of ``config`` into the experiment folder ``out``.

    Args:
        dry_run: print the plan with each stage's status (done / resume / new) and touch nothing.
        overwrite: replace ``out`` when it holds an earlier experiment; any other non-empty folder is refused
            (a dry run deletes nothing and reports every stage as new).
        stages: train only the stages these names or shell patterns (``teacher-*``) match, e.g. one per cluster
            job; a stage whose teacher is neither trained nor being trained by another worker is refused.
        device: ``auto``, ``cpu`` or ``cuda``, for every stage trained here.
        poll_seconds: how often to look again while waiting for a teacher another worker is training.

    Returns:
        the collected results (:func:`~prokd.experiment.results.collect_results`), or None for a dry run.

    Raises:
        RunDirError: ``out`` is not empty and holds no experiment, or one on other data or another split, or a
            stage trained with another recipe, and ``overwrite`` is off; or ``overwrite`` is on and ``out`` is
            not an experiment folder.
    """
    out = Path(os.path.abspath(out))  # stages store their teachers' RUN folders by this path
    console = console or Console()
    resolve_device(device)  # a bad --device fails now, even when every stage is already trained
    index = load_cases(config.data)
    plan = make_plan(config, index)
    wanted = select_stages(plan, stages)
    check_out_dir(config, out, plan, overwrite)
    if dry_run:
        statuses = {stage.name: "new" if overwrite else dry_run_status(out, stage) for stage in plan}
        console.print(plan_table(plan, statuses, title=f"experiment {config.name} → {out}"))
        console.print(plan_total(plan, statuses), highlight=False)
        return None
    created = first_missing(out)  # removed again if the first stage fails before it has a checkpoint
    if overwrite:
        delete_for_overwrite(out, EXPERIMENT_FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_json(out / "plan.json", [stage.to_json() for stage in plan])
    with removed_on_failure(created, keep=lambda: any((out / "runs").glob("*"))):
        run_stages(config, plan, wanted, out, console, device, poll_seconds)
    results = collect_results(out)
    write_results(out, results)
    volume = index.case(plan[0].split["test"][0]).image  # every stage is tested on the same cases
    if measure_all(config, plan, out, volume, console):
        results = collect_results(out)
        write_results(out, results)
    console.print(groups_table(results))
    if results["comparisons"]:
        console.print(comparisons_table(results["comparisons"]))
    return results


def dry_run_status(out: Path, stage: Stage) -> str:
    """:func:`~prokd.experiment.stages.stage_status`, or ``"running"`` while a worker holds the stage's lock."""
    return "running" if is_locked(out, stage) else stage_status(out / stage.run)


def select_stages(plan: list[Stage], patterns: list[str] | None) -> list[Stage]:
    """The stages of ``plan`` that ``patterns`` (names or shell patterns) match, in plan order; all without
    patterns. A pattern that matches no stage is an error naming the stages there are."""
    if not patterns:
        return list(plan)
    names = [stage.name for stage in plan]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise RunDirError(f"--stage {pattern}: no such stage (the plan has {', '.join(names)})")
    return [stage for stage in plan if any(fnmatch.fnmatchcase(stage.name, p) for p in patterns)]


def run_stages(
    config: ExperimentConfig,
    plan: list[Stage],
    wanted: list[Stage],
    out: Path,
    console: Console,
    device: str = "auto",
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Run the ``wanted`` stages, in plan order as far as other workers allow: each under its lock; one that
    another worker holds is left to it (and done once it is free); one whose teacher another worker is still
    training waits for it; results are written after each stage."""
    numbers = {stage.name: number for number, stage in enumerate(plan, start=1)}
    by_name = {stage.name: stage for stage in plan}
    pending, waiting_for = list(wanted), None
    while pending:
        waits: list[Stage] = []  # what the pending stages wait for: a teacher, or their own lock
        for stage in pending:
            teacher = unfinished_teacher(stage, by_name, out, pending)
            lock = None if teacher is not None else try_lock(stage_lock(out, stage))
            if lock is None:
                waiting = teacher or stage
                if waiting not in waits:
                    waits.append(waiting)
                continue
            with lock:
                run_stage(config, stage, out, console, f"[{numbers[stage.name]}/{len(plan)}]", device)
            pending.remove(stage)
            write_results(out, collect_results(out))
            break
        else:  # every pending stage is held by another worker or waits for a teacher one is training
            if waits != waiting_for:
                holders = (f"{stage.name} ({lock_holder(stage_lock(out, stage))})" for stage in waits)
                console.print(f"waiting for other workers: {', '.join(holders)}", highlight=False, soft_wrap=True)
                waiting_for = waits
            time.sleep(poll_seconds)


def unfinished_teacher(stage: Stage, by_name: dict[str, Stage], out: Path, pending: list[Stage]) -> Stage | None:
    """The first teacher of ``stage`` that is not trained yet (None when all are): one still pending here, or one
    another worker holds. A teacher that nobody is training is an error naming it."""
    for name in stage.teachers:
        teacher = by_name[name]
        locked = is_locked(out, teacher)
        if stage_status(out / teacher.run) == "done" and not locked:
            continue
        if teacher in pending or locked:
            return teacher
        raise RunDirError(
            f"stage {stage.name} needs {teacher.name}, which is not trained and no worker is training it "
            f"(run it first: --stage {teacher.name})"
        )
    return None


def stage_lock(out: Path, stage: Stage) -> Path:
    """The lock a worker holds while it trains ``stage``: ``runs/<stage>.lock``."""
    return out / f"{stage.run}.lock"


def is_locked(out: Path, stage: Stage) -> bool:
    """Whether another worker (or another open here) holds ``stage``'s lock."""
    lock = try_lock(stage_lock(out, stage))
    if lock is None:
        return True
    lock.release()
    return False


def measure_all(config: ExperimentConfig, plan: list[Stage], out: Path, volume: Path, console: Console) -> bool:
    """Time every stage together (:func:`~prokd.experiment.stages.measure_stages`) once all are trained and no
    worker holds one. Workers queue for ``runs/efficiency.lock`` after releasing their stages, so the last one to
    finish finds everything trained; the others leave it. Returns whether it measured."""
    with try_lock(out / "runs" / "efficiency.lock", wait=True):
        untrained = [stage.name for stage in plan if stage_status(out / stage.run) != "done" or is_locked(out, stage)]
        if untrained:
            console.print(f"not timed yet: {len(untrained)} stage(s) still to train ({', '.join(untrained)}); "
                          "the worker that trains the last one times them all", highlight=False, soft_wrap=True)
            return False
        timing = config.efficiency
        return measure_stages([out / stage.run for stage in plan], volume, timing.threads, timing.repeats, console)


def run_stage(
    config: ExperimentConfig, stage: Stage, out: Path, console: Console, label: str = "", device: str = "auto"
) -> str:
    """Train (or resume, or reuse) one stage and evaluate it on the test split (with ``field_of_view``, under the
    field-of-view shifts too; with ``ensemble``, its teachers' ensemble as well), unless that evaluation is newer
    than its best checkpoint; its efficiency is measured later, with every stage's. Returns its prior status."""
    run_dir = out / stage.run
    status = stage_status(run_dir)
    console.rule(f"{label} {stage.name}: {STATUS_TEXT[status]}".strip())
    train_stage(config.data, run_dir, stage.run_config(out), stage.split, console, device)
    evaluate_stage(run_dir, config.data, console)
    if stage.field_of_view:
        evaluate_stage_field_of_view(run_dir, config.data, console)
    if stage.ensemble:
        evaluate_teachers_ensemble(run_dir, config.data, [out / "runs" / name for name in stage.teachers], console)
    for name in stage.retested:
        evaluate_teacher(run_dir, config.data, out / "runs" / name, console)
    return status


SHARED_KEYS = ("data", "split")
"""Experiment keys every stage depends on; changing one makes a different experiment."""


def check_out_dir(config: ExperimentConfig, out: Path, plan: list[Stage], overwrite: bool) -> None:
    """Refuse a non-empty ``out`` that holds no ``experiment.yaml``, another dataset or split, or a stage of
    ``plan`` trained with another recipe; with ``overwrite``, one that is not an experiment folder."""
    if overwrite:
        check_replaceable(out, EXPERIMENT_FOLDER)
        return
    if not out.exists() or all(temporary_of(entry.name) for entry in out.iterdir()):
        return  # empty, or another worker is writing its experiment.yaml
    stored = out / "experiment.yaml"
    if not stored.is_file():
        raise RunDirError(
            f"{out}: folder exists, is not empty and holds no experiment.yaml (use --overwrite or another --out)"
        )
    remedy = "use --overwrite to start over, or another --out"
    old, new = yaml.safe_load(stored.read_text()), config.to_dict()
    difference = first_difference({k: old.get(k) for k in SHARED_KEYS}, {k: new[k] for k in SHARED_KEYS})
    if difference is not None:
        key, there, here = difference
        raise RunDirError(
            f"{out}: holds a different experiment: {key} is {there!r} there but {here!r} in "
            f"{config.source or 'the config'} ({remedy})"
        )
    for stage in plan:
        difference = recipe_difference(out, stage)
        if difference is not None:
            key, there, here = difference
            raise RunDirError(
                f"{out}: stage {stage.name} was trained with {key} = {there!r}, "
                f"{config.source or 'the config'} now gives {here!r} ({remedy})"
            )


def recipe_difference(out: Path, stage: Stage) -> tuple[str, Any, Any] | None:
    """The first difference between how ``stage`` was trained in ``out`` (its RUN folder's ``config.yaml`` and
    ``split.json``) and how the plan would train it; None when it matches or has not started. The stored config
    is read with today's defaults, so a key added in a later version does not count as a change; teachers are
    compared by stage name, so a copied or moved experiment folder still matches."""
    run_dir = out / stage.run
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "split.json").is_file():
        return None
    split = read_json(run_dir / "split.json")
    trained_config = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())).to_dict()
    trained = {**trained_config, "split": {k: split.get(k) for k in stage.split}}
    planned = {**stage.run_config(out).to_dict(), "split": stage.split}
    for recipe in (trained, planned):
        if recipe.get("distill"):
            recipe["distill"]["teachers"] = [Path(teacher).name for teacher in recipe["distill"]["teachers"]]
    return first_difference(trained, planned)


def plan_table(plan: list[Stage], statuses: dict[str, str], title: str) -> FittedTable:
    """The plan: each stage's model, teachers, budget, estimated time (:mod:`~prokd.experiment.estimate`) and
    status; a finished stage takes no time, a resumed one is estimated in full."""
    by_name = {stage.name: stage for stage in plan}
    estimates = stage_estimates(plan)
    table = FittedTable(title=title)
    for column in ("stage", "model", "teachers", "budget", "time", "status"):
        table.add_column(column, justify="right" if column in ("budget", "time") else "left", wrap=column == "teachers")
    for stage in plan:
        counts = Counter(by_name[name].entry for name in stage.teachers)
        teachers = ", ".join(entry if n == 1 else f"{entry} ×{n}" for entry, n in counts.items()) or "–"
        time = "–" if statuses[stage.name] == "done" else format_duration(estimates[stage.name])
        table.add_row(stage.name, stage.model, teachers, budget_text(stage.budget), time, statuses[stage.name])
    return table


def plan_total(plan: list[Stage], statuses: dict[str, str]) -> str:
    """``"11 stages, 9 to train: ~42 min (an estimate ...)"``; stages whose time cannot be estimated are counted."""
    estimates = stage_estimates(plan)
    to_train = [estimates[stage.name] for stage in plan if statuses[stage.name] != "done"]
    known = [seconds for seconds in to_train if seconds is not None]
    unknown = len(to_train) - len(known)
    total = f"{len(plan)} stages, {len(to_train)} to train"
    if known:
        total += f": {format_duration(sum(known))} (an estimate from measured step costs, 2 threads)"
    if unknown:
        total += f"{', plus' if known else ':'} {unknown} stage(s) of models without a measured step cost"
    return total


def stage_estimates(plan: list[Stage]) -> dict[str, float | None]:
    """Each stage's :func:`~prokd.experiment.estimate.stage_seconds`, by stage name."""
    models = {stage.name: stage.model for stage in plan}
    return {
        stage.name: stage_seconds(stage.config, stage.split, [models[name] for name in stage.teachers], stage.ensemble,
                                  [models[name] for name in stage.retested], stage.field_of_view)
        for stage in plan
    }


def groups_table(results: dict[str, Any]) -> FittedTable:
    """The groups in brief (``results/results.md`` has every column): seeds, labeled cases, steps, size, latency,
    Dice and HD95, mean ± sd."""
    unit = "/".join(sorted({row["distance_unit"] for row in results["rows"]}))
    table = FittedTable(title=f"experiment {results['experiment']} — test split",
                  caption="± over seeds, or over test cases for one seed; cases: labeled training cases")
    for column in ("group", "seeds", "cases", "steps", "params", "slice", "Dice", f"HD95 ({unit})"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for group in results["groups"]:
        dice, hd95 = group["overall"]["dice"], group["overall"]["hd95"]
        table.add_row(group["group"], str(len(group["seeds"])), str(group["labeled_cases"]), str(group["steps"]),
                      format_count(group["params"]), format_ms(group["latency_slice_ms"]),
                      format_stats(dice), format_stats(hd95, 1))
    return table


def comparisons_table(comparisons: list[dict[str, Any]]) -> FittedTable:
    """Each distilled student against its baseline and its best teacher (as in ``results/results.md``)."""
    header, rows = comparison_table(comparisons)
    table = FittedTable(title="distilled students", caption=COMPARISON_NOTE)
    for column in header:
        table.add_column(column, justify="left" if column in ("student", "baseline", "best teacher") else "right")
    for row in rows:
        table.add_row(*row)
    return table
