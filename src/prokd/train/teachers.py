"""Limit-trained teachers: one supervised run per subset of the training cases (one site, k cases, or the
training set of one fold of a cross-validation).

Every teacher shares the base split's validation and test cases, so its validation Dice is measured on
cases it never saw. ``DIR/teachers.json`` records each teacher's subset and score; ``DIR/<name>/`` is an
ordinary RUN folder. Teachers are independent runs: with ``jobs > 1`` they train in parallel processes
(``prokd train --split``), the CPU threads shared between them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prokd.config import ConfigError, RunConfig, save_config
from prokd.data.datalist import load_cases
from prokd.data.splits import load_split, make_split, save_split, teacher_training_sets
from prokd.models import get_spec
from prokd.threads import default_threads
from prokd.runs.checkpoint import load_checkpoint
from prokd.runs.folder import FolderKind, RunDirError, check_run_dir, prepare_run_dir, write_json
from prokd.train.runner import train_run


TEACHERS_FOLDER = FolderKind("prokd teachers folder", markers=("config.yaml", "splits"), optional=("teachers.json",),
                             listed_in="splits")
"""A ``train-teachers`` folder: ``config.yaml``, ``splits/`` and, for each ``splits/<name>.json``, the teacher's RUN
folder ``<name>/``, plus ``teachers.json``."""


def teacher_subsets(data: str | Path, config: RunConfig, by: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The base split and ``{teacher name: training case ids}`` drawn from its training cases
    (:func:`~prokd.data.splits.teacher_training_sets`).

    Raises:
        ConfigError: ``by`` is malformed or its subsets cannot be drawn.
    """
    cases = load_cases(data).labeled
    split = make_split(cases, config.split, config.train.seed)
    try:
        return split, teacher_training_sets(cases, split["train"], by, seed=config.train.seed)
    except ValueError as err:
        raise ConfigError(f"--by {err}") from None


def train_teachers(
    data: str | Path,
    out: str | Path,
    config: RunConfig,
    by: str,
    jobs: int = 1,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Train one teacher per subset into ``out/<name>``; returns (and writes) the ``teachers.json`` records.

    ``overwrite`` replaces an earlier teachers folder (:data:`TEACHERS_FOLDER`; any other folder is refused at once)
    once ``by``, the dataset's index, the split and the model name have been checked.
    """
    check_run_dir(out, overwrite=overwrite, kind=TEACHERS_FOLDER)
    split, subsets = teacher_subsets(data, config, by)
    get_spec(config.model.name)  # an unknown model fails here, before the folder is replaced
    out_dir = prepare_run_dir(out, overwrite=overwrite, kind=TEACHERS_FOLDER)
    save_config(config, out_dir / "config.yaml")
    jobs = max(1, min(jobs, len(subsets)))
    threads = max(1, (config.train.threads or default_threads()) // jobs)
    commands = {}
    for name, subset in subsets.items():
        split_file = out_dir / "splits" / f"{name}.json"
        split_file.parent.mkdir(exist_ok=True)
        save_split({**split, "train": subset}, split_file, by=by, teacher=name)
        commands[name] = [
            sys.executable, "-m", "prokd", "train", "--data", str(data), "--out", str(out_dir / name),
            "--config", str(out_dir / "config.yaml"), "--split", str(split_file), "--set", f"train.threads={threads}",
        ]
    if jobs == 1:
        for name in subsets:
            train_run(data, out_dir / name, config, split=load_split(out_dir / "splits" / f"{name}.json"))
    else:
        _run_parallel(commands, jobs)
    records = [_record(out_dir, name, subset) for name, subset in subsets.items()]
    write_json(out_dir / "teachers.json", {"by": by, "split": split, "teachers": records})
    return records


def _run_parallel(commands: dict[str, list[str]], jobs: int) -> None:
    pending, running = list(commands.items()), []
    while pending or running:
        while pending and len(running) < jobs:
            name, command = pending.pop(0)
            running.append((name, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        name, process = running.pop(0)
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RunDirError(f"teacher {name} failed (exit {process.returncode}): {stderr.strip().splitlines()[-1:]}")


def _record(out_dir: Path, name: str, subset: list[str]) -> dict[str, Any]:
    progress = load_checkpoint(out_dir / name / "checkpoints" / "last.pt")["progress"]
    return {
        "name": name,
        "run": str(out_dir / name),
        "train_cases": subset,
        "val_dice": progress["best_val_dice"],
        "best_epoch": progress["best_epoch"],
        "train_minutes": round(progress["elapsed_seconds"] / 60, 2),
    }
