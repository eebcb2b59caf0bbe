"""Setting up a distillation run: the teachers named in the config, loaded and wrapped in the objective."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prokd.config import ConfigError, RunConfig
from prokd.data.splits import leaked_cases
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import load_teacher, teacher_runs, training_cases, validation_site_scores
from prokd.distributed import World
from prokd.eval.calibration import run_calibration
from prokd.losses import SegmentationLoss
from prokd.models import get_spec

if TYPE_CHECKING:
    from prokd.train.runner import PreparedRun


SHOWN_CASES = 10
"""Leaked case ids named in the error message; more are counted."""


def check_teachers(config: RunConfig, split: Mapping[str, Sequence[str]]) -> list[Path]:
    """The teacher RUN folders of ``config.distill``, checked before anything trains: there is at least one,
    each is a run, and none was trained on a case of the student's ``split`` ``"val"`` or ``"test"`` part (its
    knowledge of those cases would flow into the student and inflate its scores).

    Raises:
        ConfigError: no teacher, or a teacher trained on validation or test cases (naming it and the cases).
        CheckpointError: a path is neither a RUN folder nor a folder of them.
    """
    if config.distill is None or not config.distill.teachers:
        raise ConfigError("'distill.teachers' must name at least one teacher RUN folder")
    runs = teacher_runs(config.distill.teachers)
    for run in runs:
        leaked = leaked_cases(training_cases(run), split)
        if leaked:
            where = " and ".join(_cases_in(part, ids) for part, ids in leaked.items())
            raise ConfigError(f"teacher {run}: trained on {where} (refusing: the comparison would leak; "
                              f"use the teachers' split: --split {run / 'split.json'})")
    return runs


def _cases_in(part: str, case_ids: list[str]) -> str:
    """E.g. ``"cases case03, case07 that are in this run's test split"``."""
    shown = ", ".join(case_ids[:SHOWN_CASES])
    more = f" and {len(case_ids) - SHOWN_CASES} more" if len(case_ids) > SHOWN_CASES else ""
    noun, verb = ("case", "is") if len(case_ids) == 1 else ("cases", "are")
    return f"{noun} {shown}{more} that {verb} in this run's {part} split"


def build_distillation(
    prepared: PreparedRun, seg_loss: SegmentationLoss, data: str | Path, world: World = World()
) -> tuple[DistillationObjective, list[dict[str, Any]]]:
    """Load the run's teachers (with their validation Dice per site for the ``site`` aggregation and their
    temperature for ``distill.calibrate``, fitted on ``data`` when not stored in the teacher's RUN folder yet) and
    build its distillation objective; nothing is written to the student's RUN folder.

    Returns:
        the objective and the teachers' records for ``RUN/teachers.json`` (run, score, site scores, temperature).
    """
    config = prepared.config
    runs = teacher_runs(config.distill.teachers)
    teachers = [load_teacher(run, config.distill.teacher_taps) for run in runs]
    for run, teacher in zip(runs, teachers):
        if config.distill.aggregate == "site":
            teacher.site_scores = validation_site_scores(run, data)
        if config.distill.calibrate:
            teacher.temperature = run_calibration(run, data).temperature
    records = [{"run": str(r), "score": t.score, "site_scores": t.site_scores, "temperature": t.temperature}
               for r, t in zip(runs, teachers)]
    objective = DistillationObjective(
        prepared.model,
        get_spec(config.model.name).default_taps,
        config.preprocess,
        teachers,
        seg_loss,
        config.distill,
        world,
    )
    return objective, records
