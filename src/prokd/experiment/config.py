"""Experiment configuration: teachers and students to train on one dataset and split, validated up front.

An experiment YAML (see ``configs/experiment_phantom.yaml``)::

    name: phantom-demo
    data: path/to/dataset               # datalist JSON or folder, relative to the YAML file
    split: {file: splits/holdout.json}  # a saved split, or SplitConfig fields + seed: {mode: holdout, seed: 0}
    base: train.yaml                    # optional RunConfig YAML; `run: {...}` is applied on top of it
    seeds: [0, 1, 2]                    # student seeds; teachers use seeds[0] unless they set `seeds:`
    threads: 2                          # torch threads per stage
    efficiency: {threads: 2}            # latency measurement
    teachers: [{name, model, steps | minutes, by?, seeds?, test_site?, field_of_view?, overrides?}]
    students: [{name, model, steps | minutes, seeds?, teachers?, labeled?, distill?, test_site?, baseline?,
                ensemble?, field_of_view?, overrides?}]

``test_site`` gives an entry its own leave-one-site-out split (drawn with the experiment's ``val_fraction`` and
seed, or, with ``split.file``, the saved split's training and validation cases of the other sites), so that one
experiment can hold out each site in turn (regime C: ``configs/promise12_regime_c.yaml``); a student distils from
those stages of its teachers that trained on none of its test cases (the teacher of the held-out site is left out).
``field_of_view: true`` also evaluates each stage of the entry on its test cases under the field-of-view shifts
(:mod:`prokd.eval.field_of_view_eval`). ``overrides`` are dotted run-config keys (``{augment.enabled:
false}``) merged into the base run, leaving its other keys as they are. :func:`load_experiment` checks every key and composes the RunConfig of every entry
(base + overrides + budget + distillation), so a bad value fails before anything trains. Errors are
:class:`~prokd.config.ConfigError` naming the file and the key, e.g. ``experiment.yaml: students[2].teachers:
unknown teacher 'fulll' (known: full, site)``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prokd.config import ConfigError, RunConfig, SplitConfig, from_dict, load_config, plain
from prokd.data.splits import load_split, parse_by
from prokd.models import list_models

TOP_LEVEL_KEYS = ("name", "data", "split", "base", "run", "seeds", "threads", "efficiency", "teachers", "students")
CONTROLLED_KEYS = ("model.name", "train.seed", "train.epochs", "train.time_budget_minutes", "distill")
"""Run-config keys an entry's ``overrides`` may not set: the experiment sets them (model, seeds, budget, distill)."""
UNBOUNDED_EPOCHS = 1_000_000
"""``train.epochs`` of a ``minutes:`` stage: the wall-clock budget alone ends it."""
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class EfficiencyConfig:
    """Latency measurement: torch threads and timed forward passes of one slice per model (the median is
    reported); every model is timed in one pass once all stages are trained, the models taking turns."""

    threads: int = 2
    repeats: int = 30


@dataclass
class TeacherEntry:
    """A teacher recipe: one stage per seed, or, with ``by``, one per site / disjoint ``cases:K`` subset / training
    set of a ``folds:K`` cross-validation (the K models of a cross-validation, distilled as one ensemble teacher).

    ``test_site``: the site this entry leaves out (its own leave-one-site-out split), None for the experiment's.
    ``field_of_view``: each stage is also evaluated on its test cases under the field-of-view shifts.
    """

    name: str = ""
    model: str = ""
    steps: int | None = None
    minutes: float | None = None
    by: str | None = None
    seeds: list[int] | None = None
    test_site: str | None = None
    field_of_view: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudentEntry:
    """A student recipe: from scratch without ``teachers``, distilled from the named teacher entries with them.

    ``labeled`` keeps the labels of that many training cases (site-stratified, seed 0); ``distill`` holds
    :class:`~prokd.config.DistillConfig` fields except ``teachers``; with ``distill.no_labels`` the student learns
    from the images of its test cases (and the dataset's unlabeled images, of its ``test_site`` when set) and no
    label. ``baseline`` names the student entry a distilled student is compared with, instead of the one trained
    with the same recipe without teachers (e.g. the student trained on the other sites' labels, for one without
    labels). ``ensemble`` also evaluates the teachers' ensemble (the mean of their probabilities) on the test cases,
    for the comparison. ``field_of_view``: each stage is also evaluated on its test cases under the field-of-view
    shifts.
    """

    name: str = ""
    model: str = ""
    steps: int | None = None
    minutes: float | None = None
    seeds: list[int] | None = None
    teachers: list[str] = field(default_factory=list)
    labeled: int | None = None
    distill: dict[str, Any] = field(default_factory=dict)
    test_site: str | None = None
    baseline: str | None = None
    ensemble: bool = False
    field_of_view: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def no_labels(self) -> bool:
        """Whether the student learns from no label (``distill.no_labels``)."""
        return bool(self.distill.get("no_labels"))


Entry = TeacherEntry | StudentEntry


@dataclass
class ExperimentConfig:
    """A validated experiment; paths are absolute and ``run`` is the resolved base RunConfig of every stage.

    Attributes:
        split: ``{"file": path}`` or the :class:`~prokd.config.SplitConfig` fields plus ``"seed"``.
        source: the YAML file it was read from (named in errors; not part of :meth:`to_dict`).
    """

    name: str
    data: Path
    split: dict[str, Any]
    run: RunConfig
    seeds: list[int]
    teachers: list[TeacherEntry]
    students: list[StudentEntry]
    base: Path | None = None
    threads: int | None = None
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The experiment as written to ``DIR/experiment.yaml`` (reading it back gives the same experiment)."""
        return plain(
            {
                "name": self.name,
                "data": str(self.data),
                "split": dict(self.split),
                "base": str(self.base) if self.base else None,
                "run": self.run.to_dict(),
                "seeds": list(self.seeds),
                "threads": self.threads,
                "efficiency": dataclasses.asdict(self.efficiency),
                "teachers": [dataclasses.asdict(entry) for entry in self.teachers],
                "students": [dataclasses.asdict(entry) for entry in self.students],
            }
        )

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError naming the experiment file and ``key``."""
        return ConfigError(f"{self.source or self.name}: {key}: {message}")

    @property
    def split_file(self) -> Path | None:
        """The saved split file, or None when the split is drawn from :meth:`split_settings`."""
        return Path(self.split["file"]) if "file" in self.split else None

    def split_settings(self, test_site: str | None = None) -> tuple[SplitConfig, int]:
        """The SplitConfig and seed of a drawn split; with ``test_site``, leave-one-site-out on that site."""
        settings = {k: v for k, v in self.split.items() if k != "seed"}
        if test_site is not None:
            settings.update(mode="loso", test_site=test_site)
        return from_dict(SplitConfig, settings, "split."), self.split["seed"]

    def teacher(self, name: str) -> TeacherEntry:
        return next(entry for entry in self.teachers if entry.name == name)

    def student(self, name: str) -> StudentEntry:
        return next(entry for entry in self.students if entry.name == name)

    def teacher_seeds(self, entry: TeacherEntry) -> list[int]:
        return entry.seeds or self.seeds[:1]

    def student_seeds(self, entry: StudentEntry) -> list[int]:
        return entry.seeds or self.seeds


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML; relative paths are relative to the file.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read experiment YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return parse_experiment(raw, path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def parse_experiment(raw: dict[str, Any], source: Path) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from its YAML mapping (errors name the key only)."""
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (valid keys: {', '.join(TOP_LEVEL_KEYS)})")
    root = source.resolve().parent
    name = raw.get("name", source.stem)
    _check(_is_slug(name), "name", f"must be a slug (letters, digits, -, _), got {name!r}")
    base = _resolve_path(root, raw["base"], "base") if raw.get("base") is not None else None
    config = ExperimentConfig(
        name=name,
        data=_resolve_path(root, _required(raw, "data"), "data"),
        split=_parse_split(raw.get("split"), root),
        run=_base_run(base, raw.get("run")),
        seeds=_seeds(raw.get("seeds", [0]), "seeds"),
        teachers=[from_dict(TeacherEntry, e, f"teachers[{i}].") for i, e in enumerate(_list(raw, "teachers"))],
        students=[from_dict(StudentEntry, e, f"students[{i}].") for i, e in enumerate(_list(raw, "students"))],
        base=base,
        threads=raw.get("threads"),
        efficiency=from_dict(EfficiencyConfig, raw.get("efficiency") or {}, "efficiency."),
        source=source,
    )
    threads = config.threads
    _check(threads is None or _int_at_least(threads, 1), "threads", f"must be an integer >= 1, got {threads!r}")
    _check(config.efficiency.threads >= 1, "efficiency.threads", "must be >= 1")
    _check(config.efficiency.repeats >= 1, "efficiency.repeats", "must be >= 1")
    _check(bool(config.teachers or config.students), "teachers", "an experiment needs at least one teacher or student")
    for kind, entries in (("teachers", config.teachers), ("students", config.students)):
        names = [entry.name for entry in entries]
        for i, entry in enumerate(entries):
            _check_entry(config, entry, f"{kind}[{i}]", duplicate=names.index(entry.name) != i)
    return config


def compose_run(config: ExperimentConfig, entry: Entry, seed: int, teacher_runs: list[str] | None = None) -> RunConfig:
    """The RunConfig of one stage: the base run, the entry's overrides, model, seed, threads, budget and (for a
    student with teachers) its distillation section with ``teacher_runs`` as the teachers.

    Raises:
        ConfigError: naming the run-config key (callers prefix the entry).
    """
    data = config.run.to_dict()
    for dotted, value in entry.overrides.items():
        for key in reversed(dotted.split(".")):
            value = {key: value}
        data = _merge(data, value)
    overridden = RunConfig.from_dict(data)
    train = data["train"]
    train["seed"] = seed
    train["threads"] = config.threads or train["threads"]
    if entry.steps is not None:
        train["epochs"] = max(1, entry.steps // overridden.train.steps_per_epoch)
        train["time_budget_minutes"] = None
    else:
        train["epochs"], train["time_budget_minutes"] = UNBOUNDED_EPOCHS, entry.minutes
    data["model"]["name"] = entry.model
    if config.split_file is None:
        data["split"] = dataclasses.asdict(config.split_settings(entry.test_site)[0])
    distill = isinstance(entry, StudentEntry) and entry.teachers
    data["distill"] = {**entry.distill, "teachers": list(teacher_runs or [])} if distill else None
    if distill and entry.no_labels and entry.test_site is not None:
        data["sites"] = [entry.test_site]  # the images it learns from: its test site's
    return RunConfig.from_dict(data)


def _check_entry(config: ExperimentConfig, entry: Entry, where: str, duplicate: bool) -> None:
    """Names, model, budget, seeds, teacher references and the composed run config of one entry."""
    _check(_is_slug(entry.name), f"{where}.name", f"must be a slug (letters, digits, -, _), got {entry.name!r}")
    _check(not duplicate, f"{where}.name", f"'{entry.name}' is used twice")
    models = [spec.name for spec in list_models()]
    _check(entry.model in models, f"{where}.model", f"unknown model {entry.model!r} (known: {', '.join(models)})")
    _check((entry.steps is None) != (entry.minutes is None), where, "give exactly one of steps or minutes")
    _check((entry.steps or entry.minutes or 0) > 0, f"{where}.{'steps' if entry.steps is not None else 'minutes'}",
           "must be positive")
    if entry.seeds is not None:
        _seeds(entry.seeds, f"{where}.seeds")
    for key in entry.overrides:
        _check(not any(key == c or key.startswith(c + ".") for c in CONTROLLED_KEYS), f"{where}.overrides",
               f"'{key}' is set by the experiment (model, steps/minutes, seeds, distill)")
    if isinstance(entry, TeacherEntry):
        if entry.by is not None:
            try:
                parse_by(entry.by)
            except ValueError as err:
                raise ConfigError(f"{where}.by: {err}") from None
    else:
        _check_student(config, entry, where)
    try:
        compose_run(config, entry, config.seeds[0], ["teacher"] * len(getattr(entry, "teachers", [])))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_student(config: ExperimentConfig, entry: StudentEntry, where: str) -> None:
    known = [teacher.name for teacher in config.teachers]
    for name in entry.teachers:
        _check(name in known, f"{where}.teachers", f"unknown teacher {name!r} (known: {', '.join(known) or 'none'})")
    _check(len(set(entry.teachers)) == len(entry.teachers), f"{where}.teachers", "lists a teacher twice")
    _check("teachers" not in entry.distill, f"{where}.distill.teachers", f"set by {where}.teachers")
    _check(not entry.distill or bool(entry.teachers), f"{where}.distill",
           "needs teachers (a student without them trains from scratch)")
    _check(entry.labeled is None or entry.labeled >= 1, f"{where}.labeled", "must be >= 1")
    _check(entry.labeled is None or not entry.no_labels, f"{where}.labeled",
           "a student with distill.no_labels keeps no labels")
    if entry.baseline is not None:
        _check_baseline(config, entry, where)
    _check(not entry.ensemble or bool(entry.teachers), f"{where}.ensemble", "needs teachers")


def _check_baseline(config: ExperimentConfig, entry: StudentEntry, where: str) -> None:
    """A named baseline is another student entry tested on the same cases, and the student is distilled."""
    known = [student.name for student in config.students if student.name != entry.name]
    _check(bool(entry.teachers), f"{where}.baseline", "compares a distilled student; this one has no teachers")
    _check(entry.baseline in known, f"{where}.baseline",
           f"unknown student {entry.baseline!r} (known: {', '.join(known) or 'none'})")
    site = config.student(entry.baseline).test_site
    _check(site == entry.test_site, f"{where}.baseline",
           f"student {entry.baseline!r} is tested on {_site_text(site)}, this one on {_site_text(entry.test_site)}")


def _site_text(test_site: str | None) -> str:
    """``"site 'HK'"``, or ``"the experiment's test cases"``."""
    return "the experiment's test cases" if test_site is None else f"site {test_site!r}"


def _parse_split(raw: Any, root: Path) -> dict[str, Any]:
    """``{"file": absolute path}`` (the file is read to check it), or SplitConfig fields with defaults + seed."""
    raw = {} if raw is None else raw
    _check(isinstance(raw, dict), "split", f"must be a mapping ({{file: ...}} or split settings), got {raw!r}")
    if "file" in raw:
        _check(len(raw) == 1, "split", "give either file or split settings (mode, fractions, seed), not both")
        path = _resolve_path(root, raw["file"], "split.file")
        try:
            load_split(path)
        except ValueError as err:
            raise ConfigError(f"split.file: {err}") from None
        return {"file": str(path)}
    settings = {k: v for k, v in raw.items() if k != "seed"}
    split = dataclasses.asdict(from_dict(SplitConfig, settings, "split."))
    seed = raw.get("seed", 0)
    _check(_int_at_least(seed, 0), "split.seed", f"must be an integer >= 0, got {seed!r}")
    return {**plain(split), "seed": seed}


def _base_run(base: Path | None, run: Any) -> RunConfig:
    """The base file's RunConfig with the inline ``run`` mapping merged over it (nested keys, deep)."""
    _check(run is None or isinstance(run, dict), "run", f"must be a mapping of run-config sections, got {run!r}")
    data = load_config(base).to_dict()
    try:
        config = RunConfig.from_dict(_merge(data, run or {}))
    except ConfigError as err:
        raise ConfigError(f"run: {err}") from None
    _check(config.distill is None, "run.distill", "is set per student (students[i].distill), not in the base run")
    return config


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` applied key by key: nested mappings are merged, anything else replaced."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _resolve_path(root: Path, value: Any, key: str) -> Path:
    _check(isinstance(value, str) and bool(value), key, f"must be a path, got {value!r}")
    path = (root / Path(value).expanduser()).resolve()
    _check(path.exists(), key, f"no such file or folder: {path}")
    return path


def _seeds(value: Any, key: str) -> list[int]:
    ok = isinstance(value, list) and value and all(_int_at_least(s, 0) for s in value)
    _check(bool(ok), key, f"must be a non-empty list of integers >= 0, got {value!r}")
    _check(len(set(value)) == len(value), key, f"lists a seed twice: {value}")
    return list(value)


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key) or []
    _check(isinstance(value, list), key, f"must be a list of entries, got {value!r}")
    return value


def _required(raw: dict[str, Any], key: str) -> Any:
    _check(raw.get(key) is not None, key, "is required")
    return raw[key]


def _is_slug(value: Any) -> bool:
    return isinstance(value, str) and SLUG.fullmatch(value) is not None


def _int_at_least(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")
