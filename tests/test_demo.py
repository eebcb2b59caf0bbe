"""The demo end to end (phantom → experiment → report → verdict) with its step budgets shrunk to a step or two; the
real demo's results for three seeds are checked by ``benchmarks/phantom_demo.py`` (BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from prokd.cli import app
from prokd.config import ConfigError
from prokd.demo import DEMO_EXPERIMENT, STEPS_SCALE_VARIABLE, demo_experiment, run_demo, steps_scale_from_environment
from prokd.experiment.results import verdict_lines
from prokd.runs.folder import RunDirError

GROUPS = ["teacher-full", "teacher-k7-k0", "teacher-k7-k1",
          "student-scratch", "student-kd", "student-scratch-4", "student-mkd-4"]
STAGES = [f"{group}-seed0" for group in GROUPS]
SCALE = 0.001
"""One optimiser step per stage (at least one step always runs)."""


def test_demo_experiment_seeds_and_scales_the_shipped_steps(phantom_data):
    shipped = yaml.safe_load(DEMO_EXPERIMENT.read_text())
    config = demo_experiment(phantom_data, seed=2, steps_scale=0.5)
    assert config.data == phantom_data.resolve() and config.seeds == [2] and config.split["seed"] == 2
    assert [e.steps for e in config.teachers] == [round(0.5 * e["steps"]) for e in shipped["teachers"]]
    assert [e.steps for e in config.students] == [round(0.5 * e["steps"]) for e in shipped["students"]]
    assert all(e.minutes is None for e in [*config.teachers, *config.students]), "budgets are steps, not minutes"
    assert config.run.train.steps_per_epoch == shipped["run"]["train"]["steps_per_epoch"]
    tiny = demo_experiment(phantom_data, steps_scale=1e-6)
    assert [e.steps for e in tiny.students] == [1, 1, 1, 1] and tiny.run.train.steps_per_epoch == 1
    scratch, kd, scratch4, mkd = config.students
    assert (kd.teachers, kd.distill["cache_teachers"]) == (["full"], True)
    assert (mkd.teachers, mkd.labeled, scratch4.labeled, scratch4.teachers) == (["k7"], 4, 4, [])
    assert mkd.distill["cache_teachers"] and mkd.distill["pseudo"] > 0 and mkd.distill["unlabeled_fraction"] > 0
    assert len({e.steps for e in config.students}) == 1, "students compared with equal step budgets"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "a lot"])
def test_steps_scale_must_be_a_positive_number(value, monkeypatch):
    monkeypatch.setenv(STEPS_SCALE_VARIABLE, value)
    with pytest.raises(ConfigError, match=STEPS_SCALE_VARIABLE):
        steps_scale_from_environment()


def test_demo_command_with_a_relative_out_runs_experiment_report_and_verdict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STEPS_SCALE_VARIABLE, str(SCALE))
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, ["demo", "--out", "demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    assert len(json.loads((out / "phantom" / "dataset.json").read_text())["unlabeled"]) == 8
    experiment = out / "experiment"
    assert [entry["stage"] for entry in json.loads((experiment / "plan.json").read_text())] == STAGES
    for stage in STAGES:
        run = experiment / "runs" / stage
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "efficiency.json").is_file()
        assert (run / "eval" / "test" / "summary.json").is_file()
    results = json.loads((experiment / "results" / "results.json").read_text())
    assert [group["group"] for group in results["groups"]] == GROUPS
    baselines = {c["group"]: c["baseline"] for c in results["comparisons"]}
    assert baselines == {"student-kd": "student-scratch", "student-mkd-4": "student-scratch-4"}
    assert (experiment / "report" / "index.html").is_file() and (experiment / "results" / "results.md").is_file()
    verdict = verdict_lines(results)
    assert verdict[0].startswith("student-kd vs student-scratch: ")
    assert result.output.rstrip().endswith("\n".join(verdict)), "the demo ends with the verdict"
    assert str(experiment / "report" / "index.html") in result.output and "a smoke run" in result.output


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    with pytest.raises(RunDirError, match=r"exists and is not a prokd demo folder \(it holds thesis.txt\); choose another --out"):
        run_demo(out, steps_scale=SCALE)
    with pytest.raises(RunDirError, match="not a prokd demo folder"):
        run_demo(out, overwrite=True, steps_scale=SCALE)
    assert (out / "thesis.txt").read_text() == "years of work"
