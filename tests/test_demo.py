"""The demo end to end (phantom → experiment → report) with its training budgets shrunk to a few seconds; the real
demo's timing and results are reported by ``prokd demo`` itself."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from rich.console import Console

from prokd.demo import DEMO_EXPERIMENT, demo_experiment, run_demo
from prokd.train.run_folder import RunDirError

STAGES = ["teacher-full-seed0", *(f"teacher-site-{site}-seed0" for site in ("SiteA", "SiteB", "SiteC", "SiteD")),
          "student-scratch-seed0", "student-kd-seed0", "student-mkd-adaptive-seed0"]
GROUPS = ["teacher-full", *(f"teacher-site-{site}" for site in ("SiteA", "SiteB", "SiteC", "SiteD")),
          "student-scratch", "student-kd", "student-mkd-adaptive"]
SCALE = 0.01
"""Budgets of 0.1 to 0.5 s: one optimiser step per stage (at least one step always runs)."""


def test_demo_experiment_scales_the_shipped_budgets(phantom_data):
    shipped = yaml.safe_load(DEMO_EXPERIMENT.read_text())
    config = demo_experiment(phantom_data, minutes_scale=0.5)
    assert config.data == phantom_data.resolve() and config.seeds == [0]
    assert [e.minutes for e in config.teachers] == [0.5 * e["minutes"] for e in shipped["teachers"]]
    assert [e.minutes for e in config.students] == [0.5 * e["minutes"] for e in shipped["students"]]
    total = sum(e["minutes"] * (4 if e.get("by") else 1) for e in shipped["teachers"] + shipped["students"])
    assert total <= 3.5, "training budgets leave too little of the 5 minutes for evaluation and the report"
    kd, mkd = config.students[1:]
    assert (kd.teachers, kd.distill["feature_term"], kd.distill["feature"]) == (["full"], "attention", 1000.0)
    assert (mkd.teachers, mkd.labelled, mkd.distill["aggregate"]) == (["site"], 4, "adaptive")
    assert mkd.distill["cache_teachers"] and not mkd.overrides


def test_demo_runs_phantom_experiment_and_report(tmp_path):
    out = tmp_path / "demo"
    console = Console(file=io.StringIO(), width=200)
    results = run_demo(out, minutes_scale=SCALE, console=console)
    assert len(json.loads((out / "phantom" / "dataset.json").read_text())["unlabeled"]) == 4
    experiment = out / "experiment"
    assert [entry["stage"] for entry in json.loads((experiment / "plan.json").read_text())] == STAGES
    for stage in STAGES:
        run = experiment / "runs" / stage
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "efficiency.json").is_file()
        assert (run / "eval" / "test" / "summary.json").is_file()
    stored = json.loads((experiment / "results" / "results.json").read_text())
    assert [group["group"] for group in stored["groups"]] == GROUPS == [group["group"] for group in results["groups"]]
    for group in stored["groups"]:
        assert group["seeds"] == [0] and 0.0 <= group["overall"]["dice"]["mean"] <= 1.0
    assert (experiment / "report" / "index.html").is_file() and (experiment / "results" / "results.md").is_file()
    printed = console.file.getvalue()
    assert "student-mkd-adaptive" in printed and str(experiment / "report" / "index.html") in printed
    with pytest.raises(RunDirError, match="not empty"):
        run_demo(out, minutes_scale=SCALE, console=console)
