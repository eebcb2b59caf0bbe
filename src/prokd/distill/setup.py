"""Setting up a distillation run: the teachers named in the config, loaded and wrapped in the objective."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prokd.config import ConfigError, RunConfig
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import load_teacher, teacher_runs
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


def build_distillation(prepared: PreparedRun, seg_loss: SegmentationLoss) -> DistillationObjective:
    """Load the run's teachers (recorded in ``RUN/teachers.json``) and build its distillation objective."""
    config = prepared.config
    runs = check_teachers(config)
    teachers = [load_teacher(run, config.distill.teacher_taps) for run in runs]
    write_json(prepared.run_dir / "teachers.json", [{"run": str(r), "score": t.score} for r, t in zip(runs, teachers)])
    return DistillationObjective(
        prepared.model,
        get_spec(config.model.name).default_taps,
        config.preprocess,
        teachers,
        seg_loss,
        config.distill,
    )
