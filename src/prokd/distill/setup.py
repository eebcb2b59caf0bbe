"""Setting up a distillation run: the teachers named in the config, loaded and wrapped in the objective, and the
sites of the unlabeled images that have none."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prokd.config import ConfigError, RunConfig
from prokd.data.datalist import UNKNOWN_SITE
from prokd.data.slices import GridCase
from prokd.data.splits import leaked_cases
from prokd.distill.aggregate import teacher_measurements
from prokd.distill.objective import DistillationObjective
from prokd.distill.site_inference import infer_sites, teacher_site
from prokd.distill.teachers import Teacher, load_teacher, teacher_runs, training_cases, validation_site_scores
from prokd.distill.trust import site_trust
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
    prepared: PreparedRun,
    seg_loss: SegmentationLoss,
    data: str | Path,
    world: World = World(),
    unlabeled: Sequence[GridCase] = (),
) -> tuple[DistillationObjective, list[dict[str, Any]]]:
    """Load the run's teachers, measure what the aggregation mode reads from them
    (:func:`~prokd.distill.aggregate.teacher_measurements`: their validation Dice per site on ``data``, their trust
    per site on the ``unlabeled`` images) and their temperature for ``distill.calibrate`` (fitted on ``data`` when
    not stored in the teacher's RUN folder yet), and build the distillation objective; nothing is written to the
    student's RUN folder.

    Returns:
        the objective and the teachers' records for ``RUN/teachers.json`` (run, score, site scores, site trust,
        temperature).
    """
    config = prepared.config
    runs = teacher_runs(config.distill.teachers)
    teachers = [load_teacher(run, config.distill.teacher_taps) for run in runs]
    needed = teacher_measurements(config.distill.aggregate, config.distill.aggregate_kwargs)
    for run, teacher in zip(runs, teachers):
        if "site_scores" in needed:
            teacher.site_scores = validation_site_scores(run, data)
        if config.distill.calibrate:
            teacher.temperature = run_calibration(run, data).temperature
    if "site_trust" in needed:
        trust = site_trust(teachers, unlabeled)
        for k, teacher in enumerate(teachers):
            teacher.site_trust = {site: values[k] for site, values in trust.items()}
    records = [{"run": str(r), "score": t.score, "site_scores": t.site_scores, "site_trust": t.site_trust,
                "temperature": t.temperature} for r, t in zip(runs, teachers)]
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


def infer_unlabeled_sites(
    prepared: PreparedRun, teachers: list[Teacher], unlabeled: list[GridCase]
) -> tuple[list[GridCase], dict[str, Any]]:
    """The ``unlabeled`` cases, those without a site given the one inferred from the teachers' features
    (:func:`~prokd.distill.site_inference.infer_sites`, fitted on each teacher's training images as its site's),
    and the record for ``RUN/inferred_sites.json``: each teacher's site and each inferred case's site, distance,
    margin and distances to every site.

    Raises:
        ConfigError: a teacher's training cases have no site or several.
    """
    runs = teacher_runs(prepared.config.distill.teachers)
    sites = [teacher_site(run, prepared.index) for run in runs]
    fitted_on: dict[str, set[str]] = {}
    for run, site in zip(runs, sites):
        fitted_on.setdefault(site, set()).update(training_cases(run))
    without_site = [case for case in unlabeled if case.site == UNKNOWN_SITE]
    guesses = {}
    if without_site:
        training_images = {site: prepared.images(prepared.index.select(sorted(ids))) for site, ids in fitted_on.items()}
        guesses = infer_sites(teachers, training_images, without_site)
    cases = [dataclasses.replace(c, site=guesses[c.case_id].site) if c.case_id in guesses else c for c in unlabeled]
    record = {
        "teacher_sites": {str(run): site for run, site in zip(runs, sites)},
        "cases": {case_id: dataclasses.asdict(guess) for case_id, guess in guesses.items()},
    }
    return cases, record


def inferred_sites_line(record: dict[str, Any]) -> str:
    """One line on an :func:`infer_unlabeled_sites` record, e.g. ``inferred the site of 3 unlabeled images without
    one: SiteA 2, SiteB 1 (smallest margin 0.12; inferred_sites.json)``."""
    cases = record["cases"]
    if not cases:
        return "site inference: every unlabeled image has a site"
    counts = Counter(guess["site"] for guess in cases.values())
    per_site = ", ".join(f"{site} {counts[site]}" for site in sorted(counts))
    margin = min(guess["margin"] for guess in cases.values())
    images = "image" if len(cases) == 1 else "images"
    return (f"inferred the site of {len(cases)} unlabeled {images} without one: {per_site} "
            f"(smallest margin {margin:.2f}; inferred_sites.json)")
