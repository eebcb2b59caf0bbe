"""Setting up a distillation run: the teachers named in the config, loaded and wrapped in the objective."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prokd.config import ConfigError, RunConfig
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import load_teacher, teacher_runs, validation_site_scores
from prokd.losses import SegmentationLoss
from prokd.models import get_spec
from prokd.train.run_folder import write_json

if TYPE_CHECKING:
    from prokd.train.runner import PreparedRun


def check_teachers(config: RunConfig) -> list[Path]:
    """The teacher RUN folders of ``config.distill``; an error when there are none or one is not a run."""
    if config.distill is None or not config.distill.teachers:
        raise ConfigError("'distill.teachers' must name at least one teacher RUN folder")
    return teacher_runs(config.distill.teachers)


def build_distillation(prepared: PreparedRun, seg_loss: SegmentationLoss, data: str | Path) -> DistillationObjective:
    """Load the run's teachers (recorded in ``RUN/teachers.json``, with their validation Dice per site for the
    ``site`` aggregation, evaluated on ``data`` when not stored yet) and build its distillation objective."""
    config = prepared.config
    runs = check_teachers(config)
    teachers = [load_teacher(run, config.distill.teacher_taps) for run in runs]
    if config.distill.aggregate == "site":
        for run, teacher in zip(runs, teachers):
            teacher.site_scores = validation_site_scores(run, data)
    records = [{"run": str(r), "score": t.score, "site_scores": t.site_scores} for r, t in zip(runs, teachers)]
    write_json(prepared.run_dir / "teachers.json", records)
    return DistillationObjective(
        prepared.model,
        get_spec(config.model.name).default_taps,
        config.preprocess,
        teachers,
        seg_loss,
        config.distill,
    )
