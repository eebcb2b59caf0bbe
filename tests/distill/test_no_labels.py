"""Regime C on the phantom: a site without labels (SiteD), taught by a teacher trained on the three other sites."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from prokd.cli import app
from prokd.config import ConfigError, DistillConfig, SplitConfig
from prokd.data.datalist import load_cases
from prokd.eval.evaluate import evaluate_run
from prokd.report.weights import rebuild_objective
from prokd.runs.checkpoint import load_checkpoint, resolve_checkpoint
from prokd.train.runner import checkpoint_meta, make_sampler, prepare_run, train_run

HELD_OUT = "SiteD"
SUPERVISED_TERMS = {"dice", "lovasz", "ce"}
TINY_STUDENT = ["--student", "unet-small", "--set", "train.steps_per_epoch=15", "--set", "train.lr=0.003",
                "--set", "preprocess.size=64", "--set", "preprocess.target_spacing=2.0",
                "--set", "augment.enabled=false"]


@pytest.fixture(scope="module")
def other_sites_teacher(phantom_data, tmp_path_factory, tiny_config):
    """A teacher trained on SiteA, SiteB and SiteC (leave-one-site-out): it has never seen a SiteD case."""
    run = tmp_path_factory.mktemp("teacher") / "others"
    config = tiny_config(epochs=6, steps_per_epoch=15, val_every=3)
    config.split = SplitConfig(mode="loso", test_site=HELD_OUT, val_fraction=0.2)
    train_run(phantom_data, run, config)
    return run


@pytest.fixture(scope="module")
def site_cases(phantom_data):
    """``(labeled, unlabeled)`` case ids of the held-out site."""
    index = load_cases(phantom_data)
    return ([c.case_id for c in index.labeled if c.site == HELD_OUT],
            [c.case_id for c in index.unlabeled if c.site == HELD_OUT])


def distill(phantom_data, teacher, out, *args):
    return CliRunner().invoke(
        app,
        ["distill", "--data", str(phantom_data), "--teacher", str(teacher), "--out", str(out), "--sites", HELD_OUT,
         "--no-labels", *TINY_STUDENT, *map(str, args)],
        catch_exceptions=False,
    )


def test_cli_student_learns_the_held_out_site_without_a_label(phantom_data, other_sites_teacher, site_cases, tmp_path):
    student = tmp_path / "student"
    result = distill(phantom_data, other_sites_teacher, student, "--epochs", 4, "--set", "distill.pseudo=1")
    assert result.exit_code == 0, result.output
    assert "no validation cases: best.pt is the last epoch" in result.output
    labeled, _ = site_cases
    split = json.loads((student / "split.json").read_text())
    assert (split["train"], split["val"], split["test"]) == ([], [], labeled)
    log = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 4
    assert all({"kl", "pseudo"} <= set(record) for record in log)
    # locate-then-segment's range of gland extents: the teacher's, measured on its labels; the student has none
    extents = [load_checkpoint(resolve_checkpoint(run, "best"))["postprocess"]["gland_extents"]
               for run in (other_sites_teacher, student)]
    assert extents[0] is not None and 0 < extents[0][0] < extents[0][1] < 1 and extents[1] == extents[0]
    assert all(not SUPERVISED_TERMS & set(record) and "val_dice" not in record for record in log)
    result = CliRunner().invoke(app, ["evaluate", str(student), "--data", str(phantom_data)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((student / "eval" / "test" / "summary.json").read_text())["summary"]
    assert set(summary) == {HELD_OUT, "overall"} and summary["overall"]["dice"]["n"] == len(labeled)
    # the teacher's test cases are the same SiteD cases; the student, without a label, comes close to it
    teacher = evaluate_run(other_sites_teacher, phantom_data, split="test").summary["overall"]["dice"]
    assert teacher["n"] == len(labeled) and teacher["mean"] > 0.4
    assert summary["overall"]["dice"]["mean"] >= 0.75 * teacher["mean"]


def test_only_the_site_images_are_sampled_and_none_with_its_label(
    phantom_data, other_sites_teacher, site_cases, tmp_path, tiny_config
):
    config = tiny_config()
    config.sites = [HELD_OUT]
    config.distill = DistillConfig(teachers=[str(other_sites_teacher)], no_labels=True)
    prepared = prepare_run(phantom_data, tmp_path / "student", config)
    images = prepared.unlabeled_cases()
    labeled, unlabeled = site_cases
    assert [case.case_id for case in images] == labeled + unlabeled  # the test cases' images, transductively
    assert all(case.label is None for case in images) and prepared.val_cases == []
    sampler = make_sampler(prepared, unlabeled=images)
    assert sampler.cases == [] and sampler.unlabeled_fraction == 1.0
    batch = sampler.batch(sampler.seed(0))
    assert not batch.labeled.any() and batch.y.sum() == 0
    config.postprocess.relocate = 2  # locate-then-segment needs a range of gland extents: the teachers' only
    without_range = SimpleNamespace(gland_extents=None)
    with pytest.raises(ConfigError, match="'postprocess.relocate' needs the training range of gland extents"):
        checkpoint_meta(prepared, [without_range])
    assert checkpoint_meta(prepared, [SimpleNamespace(gland_extents=(0.2, 0.4)), SimpleNamespace(
        gland_extents=(0.3, 0.5))])["postprocess"]["gland_extents"] == (0.2, 0.5)  # the union of the teachers'
    config.sites = None  # every labeled case is a test case then, the teacher's training cases too: refused
    with pytest.raises(ConfigError, match="trained on cases SiteA_000, SiteA_002, SiteB_000"):
        prepare_run(phantom_data, tmp_path / "everywhere", config)


def test_a_given_split_with_training_or_validation_cases_is_refused(
    phantom_data, other_sites_teacher, tmp_path, tiny_config
):
    config = tiny_config()
    config.distill = DistillConfig(teachers=[str(other_sites_teacher)], no_labels=True)
    split = {"train": ["SiteD_000"], "val": ["SiteD_001"], "test": ["SiteD_002"]}
    with pytest.raises(ConfigError, match=r"the split lists 1 train and 1 val cases, whose labels a run without"):
        train_run(phantom_data, tmp_path / "student", config, split=split)
    assert not (tmp_path / "student").exists()


def test_cli_refuses_a_run_without_a_term_that_teaches_without_labels(phantom_data, other_sites_teacher, tmp_path):
    result = distill(phantom_data, other_sites_teacher, tmp_path / "kd", "--set", "distill.kl=0")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("error: 'distill.no_labels' needs a term that teaches without labels")
    result = distill(phantom_data, other_sites_teacher, tmp_path / "kd", "--cases", 2)
    assert result.exit_code == 1 and "'max_cases' keeps the labels of K training cases" in result.output
    assert not (tmp_path / "kd").exists()


def test_cli_refuses_a_teacher_trained_on_the_held_out_site(phantom_data, site_cases, tmp_path, tiny_config):
    teacher = tmp_path / "everywhere"  # a holdout split: one case of every site is among its training cases
    train_run(phantom_data, teacher, tiny_config(epochs=1, steps_per_epoch=1))
    trained_here = sorted(set(json.loads((teacher / "split.json").read_text())["train"]) & set(site_cases[0]))
    assert trained_here
    result = distill(phantom_data, teacher, tmp_path / "kd", "--epochs", 1)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: teacher {teacher}: trained on case {trained_here[0]} that is in this "
                                    "run's test split")
    assert not (tmp_path / "kd").exists()


def test_trust_weighs_the_teachers_by_their_stability_on_the_site_images(
    phantom_data, other_sites_teacher, tmp_path, tiny_config
):
    site_a = tmp_path / "site-a"
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.sites = ["SiteA"]
    train_run(phantom_data, site_a, config)
    student = tmp_path / "student"
    result = distill(phantom_data, other_sites_teacher, student, "--teacher", site_a, "--epochs", 1,
                     "--set", "distill.pseudo=1", "--aggregate", "trust")
    assert result.exit_code == 0, result.output
    records = json.loads((student / "teachers.json").read_text())
    trusts = [record["site_trust"] for record in records]
    assert all(set(trust) == {HELD_OUT} and 0 <= trust[HELD_OUT] <= 1 for trust in trusts)
    assert trusts[0][HELD_OUT] != trusts[1][HELD_OUT]
    # the report rebuilds the same weights from teachers.json: the more stable teacher weighs more
    objective, _ = rebuild_objective(student, [other_sites_teacher, site_a])
    weights = objective.aggregator(torch.rand(2, 1, 1, 4, 4), sites=[HELD_OUT]).weights[:, 0, 0, 0, 0]
    assert (weights[0] > weights[1]) == (trusts[0][HELD_OUT] > trusts[1][HELD_OUT])
