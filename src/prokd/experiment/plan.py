"""The stages of an experiment in run order: teachers first, then the students seed by seed.

A stage is one trained model and seed: a RunConfig, the case ids it trains, validates and is tested on, and
its RUN folder ``runs/<stage>`` inside the experiment folder. Stage names (shared with ``prokd report``):

* teachers ``teacher-<name>-seed<S>``; teachers ``by`` subset ``teacher-<name>-<subset>-seed<S>`` with the
  subset a site name, ``k<i>`` for the i-th disjoint K-case subset or ``fold<i>`` for the training set of fold i
  of a cross-validation (all training cases but fold i's);
* students ``student-<name>-seed<S>``.

Every stage shares the experiment's validation and test cases, but for the entries with a ``test_site`` (their own
leave-one-site-out split). A student distils from the stages of its teacher entries at the teacher's first seed
(all subsets of a limit-trained teacher). A student without labels (``distill.no_labels``) has the test cases of
its split alone: no training or validation case.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prokd.config import ConfigError, RunConfig
from prokd.data.datalist import CaseIndex
from prokd.data.splits import hold_out_site, load_split, make_split, parse_by, restrict, teacher_training_sets
from prokd.experiment.config import Entry, ExperimentConfig, StudentEntry, TeacherEntry, compose_run

SUBSET_SEED = 0
"""Seed of the ``cases:K`` and ``folds:K`` teacher subsets and of a student's ``labeled`` cases."""


@dataclass
class Stage:
    """One model and seed to train, evaluate and measure.

    Attributes:
        entry: the name of the teacher or student entry it comes from.
        config: the stage's RunConfig; ``distill.teachers`` are the teachers' run folders relative to the
            experiment folder (:meth:`run_config` makes them absolute).
        split: ``{"train", "val", "test"}`` case ids.
        teachers: stage names of the teachers a student distils from.
        budget: ``{"steps", "minutes"}``, one of them None.
        baseline: for a distilled student, the group of the student its entry names as ``baseline``, else of
            the student trained the same way without teachers (same run config but for ``distill`` and seed, same
            training cases), if the experiment has one.
        ensemble: whether the teachers' ensemble is evaluated on the stage's test cases too.
        field_of_view: whether the stage is evaluated on its test cases under the field-of-view shifts too
            (``RUN/eval/field-of-view/``).
        site: for a teacher ``by: site``, the site it trained on (its own site in the results).
        retested: its teachers tested on other cases than the stage's, each evaluated on the stage's test cases
            too (``RUN/eval/teacher-<stage>/``), so that the student is compared with them on the same cases.
    """

    name: str
    entry: str
    kind: str
    group: str
    model: str
    seed: int
    config: RunConfig
    split: dict[str, list[str]]
    teachers: list[str]
    aggregate: str | None
    labeled: int | None
    budget: dict[str, int | float | None]
    baseline: str | None = None
    ensemble: bool = False
    field_of_view: bool = False
    retested: list[str] = dataclasses.field(default_factory=list)
    site: str | None = None

    @property
    def run(self) -> str:
        """The RUN folder, relative to the experiment folder."""
        return f"runs/{self.name}"

    def run_config(self, out: Path) -> RunConfig:
        """The RunConfig with the teachers' run folders inside the experiment folder ``out``."""
        if self.config.distill is None:
            return self.config
        teachers = [str(Path(out).resolve() / run) for run in self.config.distill.teachers]
        return dataclasses.replace(self.config, distill=dataclasses.replace(self.config.distill, teachers=teachers))

    def to_json(self) -> dict[str, Any]:
        """The stage's ``plan.json`` entry."""
        return {
            "stage": self.name,
            "kind": self.kind,
            "group": self.group,
            "model": self.model,
            "seed": self.seed,
            "run": self.run,
            "teachers": list(self.teachers),
            "aggregate": self.aggregate,
            "labeled": self.labeled,
            "budget": dict(self.budget),
            "baseline": self.baseline,
            "site": self.site,
        }


def make_plan(config: ExperimentConfig, index: CaseIndex) -> list[Stage]:
    """Every stage of ``config`` on the dataset ``index``, in run order.

    Raises:
        ConfigError: naming the experiment key whose expansion fails on this dataset (split ids, subsets,
            ``labeled``), or a stage name produced twice.
    """
    splits = entry_splits(config, index)
    by_teacher = {entry.name: teacher_stages(config, entry, i, splits[entry.test_site], index)
                  for i, entry in enumerate(config.teachers)}
    stages = [stage for stages in by_teacher.values() for stage in stages]
    seeds = list(dict.fromkeys(seed for entry in config.students for seed in config.student_seeds(entry)))
    for seed in seeds:
        for i, entry in enumerate(config.students):
            if seed in config.student_seeds(entry):
                stages.append(student_stage(config, entry, i, seed, splits[entry.test_site], index, by_teacher))
    link_baselines(stages)
    names = [stage.name for stage in stages]
    for name in names:
        if names.count(name) > 1:
            raise config.error("teachers", f"two stages are named '{name}'; rename a teacher entry")
    return stages


def link_baselines(stages: list[Stage]) -> None:
    """Set the ``baseline`` of each distilled student whose entry names none: the student group trained with the
    same recipe, no teachers."""
    scratch = {_recipe(stage): stage.group for stage in stages if stage.kind == "student" and not stage.teachers}
    for stage in stages:
        if stage.kind == "student" and stage.teachers and stage.baseline is None:
            stage.baseline = scratch.get(_recipe(stage))


def _recipe(stage: Stage) -> str:
    """What a student is trained with, its teachers, seed and batch size aside: run config and training cases.

    The batch size is left out so that a distilled student that adds unlabeled slices to the labeled ones of
    its baseline (a larger batch, ``distill.unlabeled_fraction``) keeps that baseline; the results show both
    batches (``slices / step``).
    """
    config = stage.config.to_dict()
    config.pop("distill")
    config["train"].pop("seed")
    config["train"].pop("batch_size")
    return json.dumps([config, sorted(stage.split["train"])], sort_keys=True)


def entry_splits(config: ExperimentConfig, index: CaseIndex) -> dict[str | None, dict[str, list[str]]]:
    """``{None: the experiment's split}`` and, for each ``test_site`` an entry sets, its leave-one-site-out split."""
    splits = {None: experiment_split(config, index)}
    for kind, entries in (("teachers", config.teachers), ("students", config.students)):
        for i, entry in enumerate(entries):
            if entry.test_site not in splits:
                splits[entry.test_site] = experiment_split(config, index, entry.test_site, f"{kind}[{i}].test_site")
    return splits


def experiment_split(
    config: ExperimentConfig, index: CaseIndex, test_site: str | None = None, key: str = "split"
) -> dict[str, list[str]]:
    """The split every stage shares: the saved split file, or one drawn from the split settings; with
    ``test_site``, the leave-one-site-out split of the entries that set it: drawn, or the saved split with that
    site held out (errors name ``key``)."""
    labeled = {case.case_id for case in index.labeled}
    if config.split_file is not None:
        split = load_split(config.split_file)
        unknown = sorted({case_id for ids in split.values() for case_id in ids} - labeled)
        if unknown:
            raise config.error("split.file", f"case '{unknown[0]}' is not a labeled case of {config.data}")
        if test_site is not None:
            try:
                split = hold_out_site(split, index.labeled, test_site)
            except ValueError as err:
                raise config.error(key, str(err)) from None
    else:
        settings, seed = config.split_settings(test_site)
        try:
            split = make_split(index.labeled, settings, seed)
        except ValueError as err:
            raise config.error(key, str(err)) from None
    for part in ("train", "test"):
        if not split[part]:
            raise config.error(key, f"has no {part} cases")
    return split


def teacher_stages(
    config: ExperimentConfig, entry: TeacherEntry, i: int, split: dict[str, list[str]], index: CaseIndex
) -> list[Stage]:
    """One stage per seed and training subset (the whole training set, each site, or each K-case subset)."""
    subsets = teacher_subsets(config, entry, f"teachers[{i}].by", split["train"], index)
    by_site = entry.by is not None and parse_by(entry.by)[0] == "site"
    stages = []
    for seed in config.teacher_seeds(entry):
        for subset, ids in subsets.items():
            stage = _stage(config, entry, f"teachers[{i}]", "teacher", _join("teacher", entry.name, _slug(subset)),
                           seed, {**split, "train": ids}, [])
            stage.site = subset if by_site else None
            stages.append(stage)
    return stages


def teacher_subsets(
    config: ExperimentConfig, entry: TeacherEntry, key: str, train: list[str], index: CaseIndex
) -> dict[str | None, list[str]]:
    """``{subset name (a site's name, ``k<i>``, ``fold<i>``): training case ids}``; ``{None: train}`` for a teacher
    on all training cases."""
    if entry.by is None:
        return {None: train}
    try:
        return teacher_training_sets(index.labeled, train, entry.by, seed=SUBSET_SEED)
    except ValueError as err:
        raise config.error(key, str(err)) from None


def student_stage(
    config: ExperimentConfig,
    entry: StudentEntry,
    i: int,
    seed: int,
    split: dict[str, list[str]],
    index: CaseIndex,
    by_teacher: dict[str, list[Stage]],
) -> Stage:
    """The student's stage for ``seed``; its teachers are the named entries' stages at their first seed that
    trained on none of its test cases (a site teacher, for a student tested on that site). A student without
    labels keeps only the test cases of ``split``."""
    candidates = [
        stage
        for name in entry.teachers
        for stage in by_teacher[name]
        if stage.seed == config.teacher_seeds(config.teacher(name))[0]
    ]
    test = set(split["test"])
    kept = [stage for stage in candidates if test.isdisjoint(stage.split["train"])]
    teachers = [stage.name for stage in kept]
    if entry.teachers and not teachers:
        raise config.error(f"students[{i}].teachers", "every teacher stage trained on a case this student is "
                           "tested on")
    if entry.ensemble and len(teachers) < 2:
        raise config.error(f"students[{i}].ensemble", f"needs several teacher stages, not {len(teachers)} (an "
                           "ensemble of one is its teacher)")
    train = split["train"]
    if entry.labeled is not None:
        try:
            train = restrict(train, index.labeled, max_cases=entry.labeled, seed=SUBSET_SEED)
        except ValueError as err:
            raise config.error(f"students[{i}].labeled", str(err)) from None
    own_split = {"train": [], "val": [], "test": split["test"]} if entry.no_labels else {**split, "train": train}
    stage = _stage(config, entry, f"students[{i}]", "student", _join("student", entry.name), seed, own_split, teachers)
    stage.baseline = _join("student", entry.baseline) if entry.baseline else None
    stage.retested = [teacher.name for teacher in kept if set(teacher.split["test"]) != test]
    return stage


def _stage(
    config: ExperimentConfig,
    entry: Entry,
    where: str,
    kind: str,
    group: str,
    seed: int,
    split: dict[str, list[str]],
    teachers: list[str],
) -> Stage:
    try:
        run_config = compose_run(config, entry, seed, [f"runs/{name}" for name in teachers])
    except ConfigError as err:
        raise config.error(where, str(err)) from None
    return Stage(
        name=f"{group}-seed{seed}",
        entry=entry.name,
        kind=kind,
        group=group,
        model=entry.model,
        seed=seed,
        config=run_config,
        split=split,
        teachers=teachers,
        aggregate=run_config.distill.aggregate if run_config.distill else None,
        labeled=getattr(entry, "labeled", None),
        budget={"steps": entry.steps, "minutes": entry.minutes},
        ensemble=getattr(entry, "ensemble", False),
        field_of_view=entry.field_of_view,
    )


def _join(*parts: str | None) -> str:
    return "-".join(part for part in parts if part)


def _slug(text: str | None) -> str | None:
    """A site name as it appears in a stage name (characters other than letters, digits, - and _ become -)."""
    return None if text is None else re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "site"
