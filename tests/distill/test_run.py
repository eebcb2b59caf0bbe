"""A tiny distillation on the phantom: the student improves over its untrained start; CLI smoke test."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prokd.cli import app
from prokd.config import ConfigError, DistillConfig
from prokd.data.splits import load_split, save_split
from prokd.train.runner import train_run


@pytest.fixture(scope="module")
def teacher_run(phantom_data, tmp_path_factory, tiny_config):
    run = tmp_path_factory.mktemp("teacher") / "run"
    train_run(phantom_data, run, tiny_config(epochs=6, steps_per_epoch=15))
    return run


@pytest.fixture(scope="module")
def second_teacher(phantom_data, tmp_path_factory, tiny_config):
    """A weaker teacher of another architecture (a few steps of unet-tiny), for multi-teacher runs."""
    run = tmp_path_factory.mktemp("teacher") / "tiny"
    config = tiny_config(epochs=1, steps_per_epoch=3)
    config.model.name = "unet-tiny"
    train_run(phantom_data, run, config)
    return run


@pytest.mark.parametrize(
    "distill",
    [
        {"feature": 1.0, "feature_term": "hint"},  # one teacher, its forward pass at every step, trained adapters
        {"cache_teachers": True, "aggregate": "learned"},  # two teachers, cached logits, a trained gate
    ],
    ids=["one-teacher", "two-teachers-cached"],
)
def test_distillation_resumes_exactly(
    phantom_data, teacher_run, second_teacher, tmp_path, tiny_config, check_resume, distill
):
    config = tiny_config(epochs=2, steps_per_epoch=3, val_every=2)
    config.augment.enabled = True
    teachers = [teacher_run, second_teacher] if distill.get("cache_teachers") else [teacher_run]
    config.distill = DistillConfig(teachers=[str(t) for t in teachers], unlabeled_fraction=0.25, **distill)
    check_resume(phantom_data, tmp_path, config, stop_after=1)


def test_distilled_student_improves_and_uses_unlabeled_images(phantom_data, teacher_run, tmp_path, tiny_config):
    config = tiny_config(epochs=6, steps_per_epoch=15)
    config.max_cases = 4
    config.distill = DistillConfig(teachers=[str(teacher_run)], feature=1.0, unlabeled_fraction=0.25)
    train_run(phantom_data, tmp_path / "student", config)
    log = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert {"kl", "feature", "dice"} <= set(log[0])
    assert max(r["val_dice"] for r in log[1:]) > log[0]["val_dice"] + 0.1
    split = json.loads((tmp_path / "student" / "split.json").read_text())
    assert len(split["train"]) == 4
    teachers = json.loads((tmp_path / "student" / "teachers.json").read_text())
    assert teachers[0]["run"] == str(teacher_run)


def test_site_aggregation_scores_each_teacher_on_the_validation_cases_per_site(
    phantom_data, teacher_run, tmp_path, tiny_config
):
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.distill = DistillConfig(teachers=[str(teacher_run)], aggregate="site")
    train_run(phantom_data, tmp_path / "student", config)
    (record,) = json.loads((tmp_path / "student" / "teachers.json").read_text())
    summary = json.loads((teacher_run / "eval" / "val" / "summary.json").read_text())["summary"]
    val_sites = {site for site in summary if site != "overall"}
    assert val_sites and set(record["site_scores"]) == val_sites
    assert record["site_scores"] == {site: summary[site]["dice"]["mean"] for site in val_sites}


def test_site_scores_given_in_aggregate_kwargs_are_not_evaluated(
    phantom_data, teacher_run, tmp_path, tiny_config, monkeypatch
):
    def refuse(*_):
        raise AssertionError("the teacher was evaluated although the config gives its site scores")

    monkeypatch.setattr("prokd.distill.setup.validation_site_scores", refuse)
    config = tiny_config(epochs=1, steps_per_epoch=2)
    scores = {site: [0.5] for site in ("SiteA", "SiteB", "SiteC", "SiteD")}
    config.distill = DistillConfig(teachers=[str(teacher_run)], aggregate="site", aggregate_kwargs={"scores": scores})
    train_run(phantom_data, tmp_path / "student", config)
    (record,) = json.loads((tmp_path / "student" / "teachers.json").read_text())
    assert record["site_scores"] is None


def test_distill_needs_teachers(phantom_data, tmp_path, tiny_config):
    config = tiny_config()
    config.distill = DistillConfig()
    with pytest.raises(ConfigError, match="distill.teachers"):
        train_run(phantom_data, tmp_path / "student", config)
    assert not (tmp_path / "student").exists()


def test_cli_distill_from_a_folder_of_teachers(phantom_data, teacher_run, tmp_path):
    result = CliRunner().invoke(
        app,
        ["distill", "--data", str(phantom_data), "--teacher", str(teacher_run.parent), "--student", "unet-tiny",
         "--out", str(tmp_path / "kd"), "--aggregate", "adaptive", "--epochs", "1", "--split", str(teacher_run / "split.json"),
         "--set", "train.steps_per_epoch=2", "--set", "preprocess.size=64", "--set", "preprocess.target_spacing=2.0"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "best val Dice" in result.output
    assert (tmp_path / "kd" / "split.json").read_text() == (teacher_run / "split.json").read_text()


def leaky_split(teacher_run) -> dict[str, list[str]]:
    """The teacher's split with its first training case moved to validation and its last two to test."""
    split = load_split(teacher_run / "split.json")
    first, *kept, second_last, last = split["train"]
    return {"train": kept + split["val"] + split["test"], "val": [first], "test": [second_last, last]}


def test_distill_refuses_teachers_trained_on_validation_or_test_cases(phantom_data, teacher_run, tmp_path, tiny_config):
    config = tiny_config(epochs=1, steps_per_epoch=1)
    config.distill = DistillConfig(teachers=[str(teacher_run)])
    split = leaky_split(teacher_run)
    (tmp_path / "student").mkdir()
    for name in ("config.yaml", "split.json"):  # an earlier run, which --overwrite may replace
        (tmp_path / "student" / name).write_text("an earlier run")
    with pytest.raises(ConfigError) as caught:
        train_run(phantom_data, tmp_path / "student", config, split=split, overwrite=True)
    (first,), (second_last, last) = split["val"], split["test"]
    assert str(caught.value) == (
        f"teacher {teacher_run}: trained on case {first} that is in this run's val split and cases {second_last}, "
        f"{last} that are in this run's test split (refusing: the comparison would leak; use the teachers' split: "
        f"--split {teacher_run / 'split.json'})"
    )
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == ["config.yaml", "split.json"]  # untouched
    assert (tmp_path / "student" / "config.yaml").read_text() == "an earlier run"


def test_cli_distill_with_a_leaky_split_is_one_error_line(phantom_data, teacher_run, tmp_path):
    split = tmp_path / "split.json"
    save_split(leaky_split(teacher_run), split)
    result = CliRunner().invoke(
        app,
        ["distill", "--data", str(phantom_data), "--teacher", str(teacher_run), "--out", str(tmp_path / "kd"),
         "--split", str(split)],
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    assert result.output.startswith(f"error: teacher {teacher_run}: trained on case ")
    assert "(refusing: the comparison would leak; " in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "kd").exists()


def test_train_teachers_by_site_records_subsets_and_scores(phantom_data, tmp_path, tiny_config):
    from prokd.train.teachers import train_teachers

    config = tiny_config(epochs=1, steps_per_epoch=2)
    records = train_teachers(phantom_data, tmp_path / "teachers", config, by="site")
    assert [r["name"] for r in records] == ["SiteA", "SiteB", "SiteC", "SiteD"]
    summary = json.loads((tmp_path / "teachers" / "teachers.json").read_text())
    val = set(summary["split"]["val"])
    for record in records:
        assert record["train_cases"] and all(c.startswith(record["name"]) for c in record["train_cases"])
        assert not val & set(record["train_cases"])
        assert 0.0 <= record["val_dice"] <= 1.0
        run_split = json.loads((tmp_path / "teachers" / record["name"] / "split.json").read_text())
        assert run_split["train"] == record["train_cases"]


def test_cli_train_teachers_in_parallel(phantom_data, tmp_path):
    result = CliRunner().invoke(
        app,
        ["train-teachers", "--data", str(phantom_data), "--out", str(tmp_path / "t"), "--by", "cases:2",
         "--model", "unet-tiny", "--epochs", "1", "--jobs", "2", "--set", "train.steps_per_epoch=2",
         "--set", "preprocess.size=64", "--set", "preprocess.target_spacing=2.0", "--set", "augment.enabled=false"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "t" / "teachers.json").read_text())
    subsets = [set(r["train_cases"]) for r in summary["teachers"]]
    assert len(subsets) >= 2 and all(len(s) == 2 for s in subsets)
    assert not set.intersection(*subsets)


def test_cli_distill_failing_before_its_first_checkpoint_leaves_nothing(phantom_data, teacher_run, tmp_path):
    out = tmp_path / "kd"
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()

    def distill(teacher, aggregate):
        return CliRunner().invoke(
            app,
            ["distill", "--data", str(phantom_data), "--teacher", str(teacher), "--student", "unet-tiny",
             "--out", str(out), "--aggregate", aggregate, "--epochs", "1", "--set", "train.steps_per_epoch=2",
             "--set", "preprocess.size=64", "--set", "preprocess.target_spacing=2.0"],
            catch_exceptions=False,
        )

    result = distill(not_a_run, "mean")
    assert result.exit_code == 1 and "not a RUN folder" in result.output
    assert not out.exists() and not_a_run.is_dir()
    result = distill(teacher_run, "best")  # found out once the teachers are loaded, after the folder was made
    assert result.exit_code == 1 and "unknown aggregator 'best'" in result.output
    assert not out.exists()
    result = distill(teacher_run, "mean")
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "last.pt").is_file()


def test_calibrated_distillation_fits_and_records_each_teachers_temperature(phantom_data, teacher_run, tmp_path, tiny_config):
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.distill = DistillConfig(teachers=[str(teacher_run)], calibrate=True)
    train_run(phantom_data, tmp_path / "student", config)
    stored = json.loads((teacher_run / "calibration.json").read_text())
    recorded = json.loads((tmp_path / "student" / "teachers.json").read_text())
    assert stored["after"]["ece"] < stored["before"]["ece"]
    assert [t["temperature"] for t in recorded] == [stored["temperature"]]
