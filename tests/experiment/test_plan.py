"""Plan expansion on the phantom: teachers first, subsets by site / of K cases, students seed by seed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from prokd.config import ConfigError
from prokd.data.datalist import load_cases
from prokd.data.splits import holdout_split
from prokd.experiment.config import load_experiment
from prokd.experiment.plan import make_plan

PLAN_KEYS = {"stage", "kind", "group", "model", "seed", "run", "teachers", "aggregate", "labeled", "budget", "site",
             "baseline"}


@pytest.fixture(scope="module")
def index(phantom_data):
    return load_cases(phantom_data)


def plan_for(tmp_path, phantom_data, index, write_experiment, **changes):
    return make_plan(load_experiment(write_experiment(tmp_path / "e.yaml", phantom_data, **changes)), index)


def test_site_teachers_and_students_seed_by_seed(tmp_path, phantom_data, index, write_experiment):
    teachers = [{"name": "full", "model": "unet-small", "steps": 20},
                {"name": "site", "model": "unet-tiny", "minutes": 0.5, "by": "site"}]
    students = [
        {"name": "scratch", "model": "unet-tiny", "steps": 20},
        {"name": "kd", "model": "unet-tiny", "steps": 30, "teachers": ["full"]},
        {"name": "mkd", "model": "unet-tiny", "steps": 20, "seeds": [1], "teachers": ["site"], "labeled": 2,
         "distill": {"aggregate": "weighted"}},
    ]
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, seeds=[0, 1], teachers=teachers, students=students)
    sites = ["SiteA", "SiteB", "SiteC", "SiteD"]
    assert [s.name for s in plan] == [
        "teacher-full-seed0", *(f"teacher-site-{site}-seed0" for site in sites),
        "student-scratch-seed0", "student-kd-seed0", "student-scratch-seed1", "student-kd-seed1", "student-mkd-seed1",
    ]
    by_name = {s.name: s for s in plan}
    full, mkd = by_name["teacher-full-seed0"], by_name["student-mkd-seed1"]
    # every stage shares validation and test cases; a site teacher trains on its site's training cases only
    for stage in plan:
        assert (stage.split["val"], stage.split["test"]) == (full.split["val"], full.split["test"])
    for site in sites:
        stage = by_name[f"teacher-site-{site}-seed0"]
        site_train = [c.case_id for c in index.labeled if c.site == site and c.case_id in full.split["train"]]
        assert stage.split["train"] == site_train and stage.group == f"teacher-site-{site}"
        assert stage.config.train.time_budget_minutes == 0.5 and stage.budget == {"steps": None, "minutes": 0.5}
    assert len(full.split["train"]) == 4
    # the multi-teacher student distils from all four site teachers and keeps the labels of 2 training cases
    assert mkd.teachers == [f"teacher-site-{site}-seed0" for site in sites]
    assert (mkd.aggregate, mkd.labeled, mkd.group, mkd.seed) == ("weighted", 2, "student-mkd", 1)
    assert len(mkd.split["train"]) == 2 and set(mkd.split["train"]) <= set(full.split["train"])
    assert mkd.config.distill.teachers == [f"runs/{name}" for name in mkd.teachers]
    out = tmp_path / "exp"
    assert mkd.run_config(out).distill.teachers == [str(out.resolve() / "runs" / n) for n in mkd.teachers]
    kd = by_name["student-kd-seed1"]
    assert (kd.config.train.seed, kd.config.train.epochs, kd.config.train.time_budget_minutes) == (1, 3, None)
    assert kd.teachers == ["teacher-full-seed0"] and kd.aggregate == "mean"
    assert by_name["student-scratch-seed0"].aggregate is None
    entry = kd.to_json()
    assert set(entry) == PLAN_KEYS and entry["run"] == "runs/student-kd-seed1"
    assert entry["budget"] == {"steps": 30, "minutes": None}
    json.dumps([s.to_json() for s in plan])


def test_distilled_students_are_linked_to_the_scratch_student_of_the_same_recipe(
    tmp_path, phantom_data, index, write_experiment
):
    teachers = [{"name": "full", "model": "unet-tiny", "steps": 20}]
    kd = {"model": "unet-tiny", "steps": 20, "teachers": ["full"]}
    students = [
        {"name": "scratch", "model": "unet-tiny", "steps": 20},
        {"name": "scratch-2", "model": "unet-tiny", "steps": 20, "labeled": 2},
        {"name": "kd", **kd},
        {"name": "kd-2", **kd, "labeled": 2, "distill": {"aggregate": "mean"}},
        {"name": "kd-longer", **kd, "steps": 30},
        {"name": "kd-lr", **kd, "overrides": {"train.lr": 0.01}},
        {"name": "kd-plus-unlabeled", **kd, "overrides": {"train.batch_size": 12},
         "distill": {"unlabeled_fraction": 0.3333}},
    ]
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, seeds=[0, 1], teachers=teachers, students=students)
    baselines = {stage.name: stage.baseline for stage in plan if stage.kind == "student"}
    assert baselines == {
        **{f"student-{name}-seed{seed}": None for name in ("scratch", "scratch-2") for seed in (0, 1)},
        **{f"student-{name}-seed{seed}": "student-scratch" for name in ("kd", "kd-plus-unlabeled") for seed in (0, 1)},
        **{f"student-kd-2-seed{seed}": "student-scratch-2" for seed in (0, 1)},
        **{f"student-{name}-seed{seed}": None for name in ("kd-longer", "kd-lr") for seed in (0, 1)},
    }


def test_entries_with_a_test_site_leave_it_out_and_a_student_without_labels_keeps_only_its_test_cases(
    tmp_path, phantom_data, index, write_experiment
):
    teachers = [{"name": "others", "model": "unet-tiny", "steps": 20, "by": "site", "test_site": "SiteD"}]
    students = [
        {"name": "three-sites", "model": "unet-tiny", "steps": 20, "test_site": "SiteD"},
        {"name": "no-labels", "model": "unet-tiny", "steps": 20, "test_site": "SiteD", "teachers": ["others"],
         "baseline": "three-sites", "ensemble": True, "distill": {"no_labels": True}},
        {"name": "scratch", "model": "unet-tiny", "steps": 20},
    ]
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, teachers=teachers, students=students)
    others = [f"teacher-others-{site}-seed0" for site in ("SiteA", "SiteB", "SiteC")]
    assert [s.name for s in plan] == [*others, "student-three-sites-seed0", "student-no-labels-seed0",
                                      "student-scratch-seed0"]
    *held_out, no_labels, scratch = plan
    site_d = [c.case_id for c in index.labeled if c.site == "SiteD"]
    for stage in held_out:
        assert stage.split["test"] == site_d and not set(site_d) & set(stage.split["train"] + stage.split["val"])
        assert (stage.config.split.mode, stage.config.split.test_site) == ("loso", "SiteD")
    three_sites = held_out[-1]
    assert set(three_sites.split["train"]) == {case for teacher in held_out[:3] for case in teacher.split["train"]}
    assert no_labels.split == {"train": [], "val": [], "test": site_d}
    assert (no_labels.config.no_labels, no_labels.config.sites, no_labels.teachers) == (True, ["SiteD"], others)
    assert (no_labels.baseline, no_labels.ensemble, no_labels.labeled) == ("student-three-sites", True, None)
    assert scratch.config.split.mode == "holdout" and scratch.split["test"] != site_d and not scratch.ensemble


def test_with_a_saved_split_a_held_out_site_student_learns_from_the_other_sites_teachers_only(
    tmp_path, phantom_data, index, write_experiment
):
    saved = holdout_split(index.labeled, 0.2, 0.2, seed=0)
    (tmp_path / "split.json").write_text(json.dumps(saved))
    teachers = [{"name": "site", "model": "unet-tiny", "steps": 20, "by": "site"}]
    students = [
        {"name": "three-sites", "model": "unet-tiny", "steps": 20, "test_site": "SiteD"},
        {"name": "no-labels", "model": "unet-tiny", "steps": 20, "test_site": "SiteD", "teachers": ["site"],
         "baseline": "three-sites", "distill": {"no_labels": True}},
        {"name": "kd", "model": "unet-tiny", "steps": 20, "teachers": ["site"]},
    ]
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, split={"file": "split.json"},
                    teachers=teachers, students=students)
    *site_teachers, three_sites, no_labels, kd = plan
    assert [teacher.site for teacher in site_teachers] == ["SiteA", "SiteB", "SiteC", "SiteD"]
    assert three_sites.site is None and not {*site_teachers[0].split["train"]} - {
        c.case_id for c in index.labeled if c.site == "SiteA"}
    site_d = sorted(c.case_id for c in index.labeled if c.site == "SiteD")
    assert all(teacher.split == {**saved, "train": teacher.split["train"]} for teacher in site_teachers)
    assert three_sites.split == {"train": [i for i in saved["train"] if i not in site_d],
                                 "val": [i for i in saved["val"] if i not in site_d], "test": site_d}
    others = [f"teacher-site-{site}-seed0" for site in ("SiteA", "SiteB", "SiteC")]
    assert (no_labels.split["test"], no_labels.teachers, no_labels.retested) == (site_d, others, others)
    assert kd.teachers == [teacher.name for teacher in site_teachers] and kd.retested == []


def test_a_student_whose_every_teacher_trained_on_its_test_cases_is_refused(
    tmp_path, phantom_data, index, write_experiment
):
    (tmp_path / "split.json").write_text(json.dumps(holdout_split(index.labeled, 0.2, 0.2, seed=0)))
    students = [{"name": "kd", "model": "unet-tiny", "steps": 20, "teachers": ["full"], "test_site": "SiteD"}]
    with pytest.raises(ConfigError, match=r"students\[0\]\.teachers: every teacher stage trained on a case this "
                                          r"student is tested on"):
        plan_for(tmp_path, phantom_data, index, write_experiment, split={"file": "split.json"}, students=students)


def test_k_case_subsets_and_teacher_seeds(tmp_path, phantom_data, index, write_experiment):
    teachers = [{"name": "site", "model": "unet-tiny", "steps": 20, "by": "cases:2", "seeds": [3, 4]}]
    students = [{"name": "kd", "model": "unet-tiny", "steps": 20, "teachers": ["site"]}]
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, teachers=teachers, students=students)
    assert [s.name for s in plan] == ["teacher-site-k0-seed3", "teacher-site-k1-seed3", "teacher-site-k0-seed4",
                                      "teacher-site-k1-seed4", "student-kd-seed0"]
    k0, k1 = plan[0].split["train"], plan[1].split["train"]
    assert len(k0) == len(k1) == 2 and not set(k0) & set(k1)
    assert plan[2].split["train"] == k0  # the subsets do not depend on the teacher's seed
    assert plan[-1].teachers == ["teacher-site-k0-seed3", "teacher-site-k1-seed3"]  # the teacher's first seed


def test_cross_validation_teachers_train_on_all_training_cases_but_one_fold_each(
    tmp_path, phantom_data, index, write_experiment
):
    teachers = [{"name": "cv", "model": "unet-tiny", "steps": 20, "by": "folds:2"}]
    students = [{"name": "kd", "model": "unet-tiny", "steps": 20, "teachers": ["cv"], "distill": {"aggregate": "mean"}}]
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, teachers=teachers, students=students)
    fold0, fold1, student = plan
    assert [fold0.name, fold1.name] == ["teacher-cv-fold0-seed0", "teacher-cv-fold1-seed0"]
    train = student.split["train"]
    left_out = [set(train) - set(fold0.split["train"]), set(train) - set(fold1.split["train"])]
    assert left_out[0] and left_out[1] and not left_out[0] & left_out[1] and left_out[0] | left_out[1] == set(train)
    assert student.teachers == [fold0.name, fold1.name]


def test_saved_split_file_is_used(tmp_path, phantom_data, index, write_experiment):
    ids = [c.case_id for c in index.labeled]
    split = {"train": ids[:6], "val": ids[6:8], "test": ids[8:]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    plan = plan_for(tmp_path, phantom_data, index, write_experiment, split={"file": "split.json"})
    assert plan[0].split == split


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"students": [{"name": "s", "model": "unet-tiny", "steps": 5, "labeled": 10}]},
         "students[0].labeled: cannot choose 10 cases"),
        ({"teachers": [{"name": "t", "model": "unet-tiny", "steps": 5, "by": "cases:5"}], "students": []},
         "teachers[0].by: cannot draw"),
        ({"teachers": [{"name": "full", "model": "unet-tiny", "steps": 5, "by": "site"},
                       {"name": "full-SiteA", "model": "unet-tiny", "steps": 5}], "students": []},
         "two stages are named 'teacher-full-SiteA-seed0'"),
        ({"split": {"mode": "loso", "test_site": "SiteX"}}, "split: unknown test site 'SiteX'"),
        ({"students": [{"name": "s", "model": "unet-tiny", "steps": 5, "test_site": "SiteX"}]},
         "students[0].test_site: unknown test site 'SiteX'"),
        ({"students": [{"name": "s", "model": "unet-tiny", "steps": 5, "teachers": ["full"], "ensemble": True}]},
         "students[0].ensemble: needs several teacher stages, not 1"),
    ],
)
def test_expansion_errors_name_the_key(tmp_path, phantom_data, index, write_experiment, changes, message):
    with pytest.raises(ConfigError, match=rf"e\.yaml: .*{re.escape(message)}"):
        plan_for(tmp_path, phantom_data, index, write_experiment, **changes)


def test_split_file_with_unknown_case(tmp_path, phantom_data, index, write_experiment):
    (tmp_path / "split.json").write_text(json.dumps({"train": ["nope"], "val": [], "test": ["SiteA_000"]}))
    with pytest.raises(ConfigError, match=r"split.file: case 'nope' is not a labeled case"):
        plan_for(tmp_path, phantom_data, index, write_experiment, split={"file": str(Path(tmp_path / "split.json"))})
