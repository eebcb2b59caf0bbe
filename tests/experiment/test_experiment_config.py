"""Experiment YAML: defaults and absolute paths, composed stage configs, errors that name the file and the key."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
import yaml

from prokd.config import ConfigError
from prokd.experiment.config import UNBOUNDED_EPOCHS, compose_run, load_experiment


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def test_valid_experiment_fills_defaults_and_round_trips(tmp_path, data, write_experiment):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"train": {"lr": 0.01, "steps_per_epoch": 7}, "preprocess": {"size": 96}}))
    path = write_experiment(tmp_path / "sub" / "e.yaml", "../data", base="../base.yaml", efficiency={"threads": 3})
    config = load_experiment(path)
    assert config.data == data.resolve() and config.base == base.resolve()
    assert config.efficiency.threads == 3 and config.efficiency.repeats == 30
    # the inline `run` mapping is merged over the base file, key by key
    assert config.run.train.lr == pytest.approx(3e-3) and config.run.train.steps_per_epoch == 10
    assert config.run.preprocess.size == 64 and config.run.preprocess.target_spacing == 2.0
    assert config.split == {"mode": "holdout", "val_fraction": 0.2, "test_fraction": 0.2, "folds": 5, "fold": 0,
                            "test_site": None, "seed": 0}
    assert config.teacher_seeds(config.teachers[0]) == [0]
    assert config.student_seeds(config.students[0]) == [0, 1] and config.student_seeds(config.students[1]) == [0]
    written = tmp_path / "written.yaml"
    written.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert load_experiment(written).to_dict() == config.to_dict()
    json.dumps(config.to_dict())  # plain containers only


def test_split_file_and_name_default(tmp_path, data, write_experiment):
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c"]}))
    changes = {"split": {"file": "split.json"}}
    path = write_experiment(tmp_path / "my-study.yaml", data, **changes)
    raw = yaml.safe_load(path.read_text())
    del raw["name"]
    path.write_text(yaml.safe_dump(raw))
    config = load_experiment(path)
    assert config.name == "my-study"
    assert config.split_file == (tmp_path / "split.json").resolve()


def test_composed_stage_configs_carry_budget_seed_and_distillation(tmp_path, data, write_experiment):
    config = load_experiment(write_experiment(tmp_path / "e.yaml", data))
    teacher = compose_run(config, config.teachers[0], seed=4)
    assert (teacher.model.name, teacher.train.seed, teacher.train.threads) == ("unet-small", 4, 1)
    assert (teacher.train.epochs, teacher.train.time_budget_minutes, teacher.distill) == (2, None, None)
    kd = compose_run(config, config.students[1], seed=0, teacher_runs=["runs/a", "runs/b"])
    assert kd.distill.teachers == ["runs/a", "runs/b"] and kd.distill.aggregate == "adaptive"
    overridden = copy.deepcopy(config.students[0])
    overridden.overrides = {"augment.flip_prob": 0.1, "preprocess": {"context": 1}}
    merged = compose_run(config, overridden, seed=0)
    assert (merged.augment.flip_prob, merged.augment.enabled) == (0.1, False)  # the base's other keys stay
    assert (merged.preprocess.context, merged.preprocess.size) == (1, 64)
    timed = copy.deepcopy(config.teachers[0])
    timed.steps, timed.minutes = None, 1.5
    timed_run = compose_run(config, timed, seed=0)
    assert (timed_run.train.epochs, timed_run.train.time_budget_minutes) == (UNBOUNDED_EPOCHS, 1.5)


def student(**entry: Any) -> dict[str, Any]:
    return {"name": "s", "model": "unet-tiny", "steps": 20, **entry}


ERRORS = [
    ({"seed": 1}, "seed: unknown key"),
    ({"students": [student(teachers=["fulll"])]}, "students[0].teachers: unknown teacher 'fulll' (known: full, site)"),
    ({"teachers": [{"name": "full", "model": "unet-small", "steps": 20}] * 2},
     "teachers[1].name: 'full' is used twice"),
    ({"students": [student(name="kd all")]}, "students[0].name: must be a slug"),
    ({"teachers": [{"name": "t", "model": "unet-huge", "steps": 20}]}, "teachers[0].model: unknown model 'unet-huge'"),
    ({"teachers": [{"name": "t", "model": "unet-small", "steps": 20, "minutes": 2}]},
     "teachers[0]: give exactly one of steps or minutes"),
    ({"students": [student(steps=None)]}, "students[0]: give exactly one of steps or minutes"),
    ({"students": [student(steps=0)]}, "students[0].steps: must be positive"),
    ({"students": [student(steps="many")]}, "'students[0].steps' must be int"),
    ({"teachers": [{"name": "t", "model": "unet-small", "steps": 20, "epochs": 3}]},
     "unknown key 'teachers[0].epochs'"),
    ({"teachers": [{"name": "t", "model": "unet-small", "steps": 20, "by": "hospital"}]},
     "teachers[0].by: must be 'site', 'cases:K' (disjoint K-case subsets) or 'folds:K'"),
    ({"students": [student(overrides={"augment.enabld": True})]}, "students[0]: unknown key 'augment.enabld'"),
    ({"students": [student(overrides={"train.lr": -1.0})]}, "students[0]: 'train.lr' must be a finite positive number"),
    ({"students": [student(overrides={"train.epochs": 3})]},
     "students[0].overrides: 'train.epochs' is set by the experiment"),
    ({"students": [student(distill={"kl": 1.0})]}, "students[0].distill: needs teachers"),
    ({"students": [student(teachers=["full"], distill={"klx": 1.0})]}, "students[0]: unknown key 'distill.klx'"),
    ({"students": [student(teachers=["full"], distill={"teachers": ["x"]})]}, "students[0].distill.teachers: set by"),
    ({"students": [student(teachers=["site"], distill={"cache_teachers": True, "feature": 1.0})]},
     "students[0]: 'distill.cache_teachers' caches the teachers' logits only"),
    ({"students": [student(labeled=0)]}, "students[0].labeled: must be >= 1"),
    ({"split": {"mode": "holdout", "shuffle": True}}, "unknown key 'split.shuffle'"),
    ({"split": {"file": "missing.json"}}, "split.file: no such file or folder"),
    ({"split": {"file": "x.json", "seed": 1}}, "split: give either file or split settings"),
    ({"seeds": [0, 0]}, "seeds: lists a seed twice"),
    ({"seeds": []}, "seeds: must be a non-empty list"),
    ({"threads": 0}, "threads: must be an integer >= 1"),
    ({"efficiency": {"repeats": 0}}, "efficiency.repeats: must be >= 1"),
    ({"run": {"train": {"batch_size": 0}}}, "run: 'train.batch_size' must be >= 1"),
    ({"run": {"distill": {"kl": 1.0}}}, "run.distill: is set per student"),
    ({"data": "nowhere"}, "data: no such file or folder"),
    ({"students": [student(teachers=["full"], labeled=2, distill={"no_labels": True})]},
     "students[0].labeled: a student with distill.no_labels keeps no labels"),
    ({"students": [student(teachers=["full"], distill={"no_labels": True, "kl": 0.0})]},
     "students[0]: 'distill.no_labels' needs a term that teaches without labels"),
    ({"students": [student(teachers=["full"], baseline="nope")]}, "students[0].baseline: unknown student 'nope'"),
    ({"students": [student(baseline="b"), student(name="b")]},
     "students[0].baseline: compares a distilled student; this one has no teachers"),
    ({"students": [student(teachers=["full"], baseline="b"), student(name="b", test_site="SiteD")]},
     "students[0].baseline: student 'b' is tested on site 'SiteD', this one on the experiment's test cases"),
    ({"students": [student(ensemble=True)]}, "students[0].ensemble: needs teachers"),
    ({"students": [student(field_of_view="yes")]}, "'students[0].field_of_view' must be bool, got 'yes'"),
]


@pytest.mark.parametrize(("changes", "message"), ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_errors_name_the_file_and_the_key(tmp_path, data, write_experiment, changes, message):
    changes = dict(changes)
    path = write_experiment(tmp_path / "experiment.yaml", changes.pop("data", data), **changes)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        load_experiment(path)


def test_a_student_without_labels_learns_from_its_test_site_images(tmp_path, data, write_experiment):
    teachers = [{"name": "others", "model": "unet-tiny", "steps": 20, "by": "site", "test_site": "SiteD"}]
    students = [student(teachers=["others"], test_site="SiteD", distill={"no_labels": True, "pseudo": 1.0})]
    config = load_experiment(write_experiment(tmp_path / "e.yaml", data, teachers=teachers, students=students))
    run = compose_run(config, config.students[0], seed=0, teacher_runs=["runs/a"])
    assert run.no_labels and run.sites == ["SiteD"] and run.distill.pseudo == 1.0
    assert (run.split.mode, run.split.test_site, run.split.val_fraction) == ("loso", "SiteD", 0.2)
    teacher = compose_run(config, config.teachers[0], seed=0)
    assert (teacher.split.mode, teacher.split.test_site, teacher.sites) == ("loso", "SiteD", None)


def test_unknown_teacher_error_is_one_exact_line(tmp_path, data, write_experiment):
    path = write_experiment(tmp_path / "experiment.yaml", data, students=[student(teachers=["fulll"])])
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    assert str(caught.value) == f"{path}: students[0].teachers: unknown teacher 'fulll' (known: full, site)"


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_experiment(path)
