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
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from prokd.config import RunConfig
from prokd.data.datalist import load_cases
from prokd.experiment.config import ExperimentConfig
from prokd.experiment.estimate import format_duration, stage_seconds
from prokd.experiment.plan import Stage, make_plan
from prokd.experiment.results import (
    COMPARISON_NOTE,
    budget_text,
    collect_results,
    comparison_table,
    format_count,
    format_ms,
    format_stats,
    write_results,
)
from prokd.experiment.stages import evaluate_stage, measure_stages, stage_status, train_stage
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

STATUS_TEXT = {"done": "trained, reused", "resume": "resuming", "new": "training"}
_MISSING = "<missing>"
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
) -> dict[str, Any] | None:
    """Train, evaluate and measure every stage of ``config`` into the experiment folder ``out``.

    Args:
        dry_run: print the plan with each stage's status (done / resume / new) and touch nothing.
        overwrite: replace ``out`` when it holds an earlier experiment; any other non-empty folder is refused
            (a dry run deletes nothing and reports every stage as new).

    Returns:
        the collected results (:func:`~prokd.experiment.results.collect_results`), or None for a dry run.

    Raises:
        RunDirError: ``out`` is not empty and holds no experiment, or one on other data or another split, or a
            stage trained with another recipe, and ``overwrite`` is off; or ``overwrite`` is on and ``out`` is
            not an experiment folder.
    """
    out = Path(os.path.abspath(out))  # stages store their teachers' RUN folders by this path
    console = console or Console()
    index = load_cases(config.data)
    plan = make_plan(config, index)
    check_out_dir(config, out, plan, overwrite)
    if dry_run:
        statuses = {stage.name: "new" if overwrite else stage_status(out / stage.run) for stage in plan}
        console.print(plan_table(plan, statuses, title=f"experiment {config.name} → {out}"))
        console.print(plan_total(plan, statuses), highlight=False)
        return None
    created = first_missing(out)  # removed again if the first stage fails before it has a checkpoint
    if overwrite:
        delete_for_overwrite(out, EXPERIMENT_FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_json(out / "plan.json", [stage.to_json() for stage in plan])
    for number, stage in enumerate(plan, start=1):
        with removed_on_failure(created, keep=lambda: any((out / "runs").glob("*"))):
            run_stage(config, stage, out, console, f"[{number}/{len(plan)}]")
        results = collect_results(out)
        write_results(out, results)
    volume = index.case(plan[0].split["test"][0]).image  # every stage is tested on the same cases
    timing = config.efficiency
    if measure_stages([out / stage.run for stage in plan], volume, timing.threads, timing.repeats, console):
        results = collect_results(out)
        write_results(out, results)
    console.print(groups_table(results))
    if results["comparisons"]:
        console.print(comparisons_table(results["comparisons"]))
    return results


def run_stage(config: ExperimentConfig, stage: Stage, out: Path, console: Console, label: str = "") -> str:
    """Train (or resume, or reuse) one stage and evaluate it on the test split, unless its evaluation is newer
    than its best checkpoint; its efficiency is measured later, with every stage's. Returns its prior status."""
    run_dir = out / stage.run
    status = stage_status(run_dir)
    console.rule(f"{label} {stage.name}: {STATUS_TEXT[status]}".strip())
    train_stage(config.data, run_dir, stage.run_config(out), stage.split, console)
    evaluate_stage(run_dir, config.data, console)
    return status


SHARED_KEYS = ("data", "split")
"""Experiment keys every stage depends on; changing one makes a different experiment."""


def check_out_dir(config: ExperimentConfig, out: Path, plan: list[Stage], overwrite: bool) -> None:
    """Refuse a non-empty ``out`` that holds no ``experiment.yaml``, another dataset or split, or a stage of
    ``plan`` trained with another recipe; with ``overwrite``, one that is not an experiment folder."""
    if overwrite:
        check_replaceable(out, EXPERIMENT_FOLDER)
        return
    if not out.exists() or not any(out.iterdir()):
        return
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


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (``students[1].steps``) where ``old`` and ``new`` differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in [*new, *(k for k in old if k not in new)]:
            child = f"{key}.{name}" if key else str(name)
            found = first_difference(old.get(name, _MISSING), new.get(name, _MISSING), child)
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            before, after = (items[i] if i < len(items) else _MISSING for items in (old, new))
            found = first_difference(before, after, f"{key}[{i}]")
            if found is not None:
                return found
        return None
    return None if old == new else (key or "experiment", old, new)


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
        stage.name: stage_seconds(stage.config, stage.split, [models[name] for name in stage.teachers])
        for stage in plan
    }


def groups_table(results: dict[str, Any]) -> FittedTable:
    """The groups in brief (``results/results.md`` has every column): seeds, labelled cases, steps, size, latency,
    Dice and HD95, mean ± sd."""
    unit = "/".join(sorted({row["distance_unit"] for row in results["rows"]}))
    table = FittedTable(title=f"experiment {results['experiment']} — test split",
                  caption="± over seeds, or over test cases for one seed; cases: labelled training cases")
    for column in ("group", "seeds", "cases", "steps", "params", "slice", "Dice", f"HD95 ({unit})"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for group in results["groups"]:
        dice, hd95 = group["overall"]["dice"], group["overall"]["hd95"]
        table.add_row(group["group"], str(len(group["seeds"])), str(group["labelled_cases"]), str(group["steps"]),
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
