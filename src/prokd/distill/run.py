"""A distillation run: frozen teachers → student, in the same RUN folder layout and training loop as a
supervised run (only the objective differs)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from prokd.config import ConfigError, RunConfig
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import load_teacher, teacher_runs
from prokd.losses import SegmentationLoss
from prokd.models import get_spec
from prokd.train.loop import EpochCallback, RunState, fit
from prokd.train.run_folder import write_json
from prokd.train.supervised import checkpoint_meta, make_sampler, prepare_run


def train_distilled(
    data: str | Path,
    out: str | Path,
    config: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    split: dict[str, list[str]] | None = None,
    console: Console | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> RunState:
    """Train ``config.model`` as a student of the teachers in ``config.distill.teachers``.

    The student's labelled slices come from the run's training split; with ``distill.unlabeled_fraction`` > 0
    each batch also holds slices of unlabelled images (the dataset's, plus training cases left out by
    ``sites`` / ``max_cases``), which only the distillation terms see.
    """
    if not resume:
        _check_teachers(config)
    prepared = prepare_run(data, out, config, resume=resume, overwrite=overwrite, split=split)
    config = prepared.config
    runs = _check_teachers(config)
    teachers = [load_teacher(run, config.distill.teacher_taps) for run in runs]
    write_json(prepared.run_dir / "teachers.json", [{"run": str(r), "score": t.score} for r, t in zip(runs, teachers)])
    objective = DistillationObjective(
        prepared.model,
        get_spec(config.model.name).default_taps,
        config.preprocess,
        teachers,
        SegmentationLoss.from_config(config.loss, config.model.out_channels),
        config.distill,
    )
    unlabeled = prepared.unlabeled_cases() if config.distill.unlabeled_fraction > 0 else None
    return fit(
        prepared.run_dir,
        config,
        prepared.model,
        objective,
        make_sampler(prepared, context=objective.context, unlabeled=unlabeled),
        prepared.val_cases,
        checkpoint_meta(prepared),
        resume=resume,
        on_epoch_end=on_epoch_end,
        console=console,
    )


def _check_teachers(config: RunConfig) -> list[Path]:
    if config.distill is None or not config.distill.teachers:
        raise ConfigError("'distill.teachers' must name at least one teacher RUN folder")
    return teacher_runs(config.distill.teachers)
