"""A tiny experiment on the phantom end to end; a rerun trains nothing; an interrupted stage resumes exactly."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from prokd.cli import app
from prokd.config import ConfigError
from prokd.data.datalist import load_cases
from prokd.data.io import read_volume
from prokd.data.splits import holdout_split, load_split
from prokd.eval.efficiency import count_parameters
from prokd.experiment import stages, verdict_lines
from prokd.experiment.config import load_experiment
from prokd.experiment.plan import make_plan
from prokd.experiment.estimate import format_duration, stage_seconds
from prokd.experiment.runner import comparisons_table, groups_table, recipe_difference, run_experiment
from prokd.models import build_model
from prokd.runs.checkpoint import load_checkpoint
from prokd.runs.folder import RunDirError
from prokd.train.runner import train_run

STAGES = ["teacher-full-seed0", "teacher-site-k0-seed0", "teacher-site-k1-seed0", "student-scratch-seed0",
          "student-kd-seed0", "student-scratch-seed1"]
FIELD_OF_VIEW_STAGES = ["teacher-full-seed0", "student-kd-seed0"]
EFFICIENCY_KEYS = {"params", "macs", "latency_slice_ms", "latency_volume_ms", "slice_input", "volume_slices", "threads",
                   "repeats", "volume_repeats"}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def output(console: Console) -> str:
    return console.file.getvalue()


@pytest.fixture(scope="module")
def experiment(phantom_data, tmp_path_factory, write_experiment):
    """The tiny experiment (3 teachers, 3 students, 20 steps each) run once into ``out``; the teacher ``full`` and the
    student ``kd`` are evaluated under the field-of-view shifts too."""
    folder = tmp_path_factory.mktemp("experiment")
    path = write_experiment(folder / "experiment.yaml", phantom_data)
    entries = yaml.safe_load(path.read_text())
    for entry in (entries["teachers"][0], entries["students"][1]):
        entry["field_of_view"] = True
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    config = load_experiment(path)
    results = run_experiment(config, folder / "out", console=quiet())
    return path, folder / "out", results


def plan_statuses(text: str) -> dict[str, str]:
    """Stage → status, from the plan table of a dry run (one line per stage, the status last)."""
    return {line.split()[0]: line.split()[-1] for line in text.splitlines() if line.startswith(("teacher-", "student-"))}


def run_files(out):
    """``{file: mtime_ns}`` of everything under ``runs/``."""
    return {p: p.stat().st_mtime_ns for p in sorted((out / "runs").rglob("*")) if p.is_file()}


def test_experiment_writes_the_folder_contract(experiment, phantom_data):
    path, out, results = experiment
    stored = yaml.safe_load((out / "experiment.yaml").read_text())
    assert stored == load_experiment(path).to_dict() and stored["data"] == str(phantom_data.resolve())
    plan = json.loads((out / "plan.json").read_text())
    assert [entry["stage"] for entry in plan] == STAGES
    assert plan[4]["teachers"] == STAGES[:3] and plan[4]["aggregate"] == "adaptive"
    index = load_cases(phantom_data)
    first_test_case = index.case(json.loads((out / "runs" / STAGES[0] / "split.json").read_text())["test"][0])
    slices = read_volume(first_test_case.image)[0].shape[0]
    for entry in plan:
        run = out / entry["run"]
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "eval" / "test" / "cases.csv").is_file()
        progress = load_checkpoint(run / "checkpoints" / "last.pt")["progress"]
        assert (progress["epoch"], progress["step"]) == (2, 20)
        facts = json.loads((run / "efficiency.json").read_text())
        assert set(facts) == EFFICIENCY_KEYS
        assert facts["params"] == count_parameters(build_model(entry["model"]))
        assert facts["slice_input"] == [1, 1, 64, 64] and facts["volume_slices"] == slices and facts["threads"] == 1
        assert facts["macs"] > 0 and 0 < facts["latency_slice_ms"] < facts["latency_volume_ms"]
        assert (facts["repeats"], facts["volume_repeats"]) == (2, 2)  # efficiency.repeats: 2, per model
    # every model is timed in one pass once all stages are trained
    trained = max((out / e["run"] / "checkpoints" / "best.pt").stat().st_mtime_ns for e in plan)
    assert min((out / e["run"] / "efficiency.json").stat().st_mtime_ns for e in plan) > trained
    assert results["latency"] == {"threads": 1, "repeats": 2, "volume_repeats": 2}
    teachers = json.loads((out / "runs" / "student-kd-seed0" / "teachers.json").read_text())
    assert [t["run"] for t in teachers] == [str(out.resolve() / "runs" / name) for name in STAGES[:3]]

    # results: one row per stage, groups over seeds
    assert results == json.loads((out / "results" / "results.json").read_text())
    assert results["experiment"] == "tiny" and [r["stage"] for r in results["rows"]] == STAGES
    rows = {row["stage"]: row for row in results["rows"]}
    summary = json.loads((out / "runs" / "student-kd-seed0" / "eval" / "test" / "summary.json").read_text())["summary"]
    kd = rows["student-kd-seed0"]
    assert kd["overall"]["dice"]["mean"] == summary["overall"]["dice"]["mean"]
    assert set(kd["sites"]) == {"SiteA", "SiteB", "SiteC", "SiteD"} and kd["distance_unit"] == "mm"
    assert kd["steps"] == 20 and kd["train_minutes"] >= 0
    train_cases = len(json.loads((out / "runs" / "student-kd-seed0" / "split.json").read_text())["train"])
    assert kd["labeled_cases"] == train_cases and rows["teacher-site-k0-seed0"]["labeled_cases"] == 2
    groups = {group["group"]: group for group in results["groups"]}
    assert list(groups) == ["teacher-full", "teacher-site-k0", "teacher-site-k1", "student-scratch", "student-kd"]
    scratch = groups["student-scratch"]
    seed_dice = [rows[f"student-scratch-seed{s}"]["overall"]["dice"]["mean"] for s in (0, 1)]
    assert scratch["seeds"] == [0, 1] and scratch["sd_over"] == "seeds"
    assert scratch["overall"]["dice"]["mean"] == pytest.approx(sum(seed_dice) / 2)
    assert scratch["overall"]["dice"]["sd"] == pytest.approx(abs(seed_dice[0] - seed_dice[1]) / 2**0.5)
    assert groups["student-kd"]["sd_over"] == "cases" and groups["student-kd"]["overall"]["dice"]["n"] == 4
    # the KD student is compared with the scratch student (same recipe, no teachers) and its best teacher
    (comparison,) = results["comparisons"]
    assert (comparison["group"], comparison["baseline"]) == ("student-kd", "student-scratch")
    assert comparison["change_points"] == pytest.approx(100 * (kd["overall"]["dice"]["mean"] - sum(seed_dice) / 2))
    teacher_dice = {name: rows[name]["overall"]["dice"]["mean"] for name in STAGES[:3]}
    assert comparison["best_teacher_dice"] == max(teacher_dice.values())
    with (out / "results" / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [line["stage"] for line in table] == STAGES and "dice_SiteD" in table[0]
    assert "| student-scratch |" in (out / "results" / "results.md").read_text()

    # field_of_view: true: the stage under every shift, on its test cases; the others not
    for name in STAGES:
        evaluated = name in FIELD_OF_VIEW_STAGES
        assert (out / "runs" / name / "eval" / "field-of-view" / "summary.json").is_file() == evaluated
        assert (rows[name]["field_of_view"] is not None) == evaluated
    curve = json.loads((out / "runs" / "student-kd-seed0" / "eval" / "field-of-view" / "summary.json").read_text())
    assert curve["checkpoint"] == str(out / "runs" / "student-kd-seed0" / "checkpoints" / "best.pt")
    assert kd["field_of_view"] == {shift: {"dice": s["dice"]["mean"], "ceiling": s["ceiling"]["mean"]}
                                   for shift, s in curve["summary"].items()}
    assert kd["field_of_view"]["original"]["dice"] == pytest.approx(kd["overall"]["dice"]["mean"])
    assert groups["student-kd"]["field_of_view"] == kd["field_of_view"]
    section = (out / "results" / "results.md").read_text().split("## Field of view")[1].split("\n## ")[0]
    assert [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ")][2:] == [
        "| ceiling: the label itself", "| teacher-full", "| student-kd"]  # below the header and its rule


def test_rerun_trains_evaluates_and_measures_nothing(experiment, monkeypatch):
    path, out, _ = experiment
    before = run_files(out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(stages, "train_run", no_training)
    console = quiet()
    run_experiment(load_experiment(path), out, console=console)
    assert run_files(out) == before
    assert output(console).count("trained, reused") == len(STAGES)
    assert "distilled students" in output(console) and "student-scratch" in output(console)


def test_interrupted_stage_resumes_exactly(experiment, tmp_path):
    path, original, _ = experiment
    out = tmp_path / "out"
    shutil.copytree(original, out)
    config = load_experiment(path)
    stage = make_plan(config, load_cases(config.data))[-1]  # student-scratch-seed1, no teachers
    shutil.rmtree(out / stage.run)

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(config.data, out / stage.run, stage.run_config(out), split=stage.split, on_epoch_end=interrupt)
    assert load_checkpoint(out / stage.run / "checkpoints" / "last.pt")["progress"]["epoch"] == 1
    console = quiet()
    run_experiment(config, out, dry_run=True, console=console)
    statuses = plan_statuses(output(console))
    assert statuses == {**{name: "done" for name in STAGES[:-1]}, stage.name: "resume"}

    results = run_experiment(config, out, console=quiet())
    log = [json.loads(line) for line in (out / stage.run / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    resumed = load_checkpoint(out / stage.run / "checkpoints" / "last.pt")["state_dict"]
    straight = load_checkpoint(original / stage.run / "checkpoints" / "last.pt")["state_dict"]
    assert all(torch.equal(resumed[name], tensor) for name, tensor in straight.items())
    row = next(row for row in results["rows"] if row["stage"] == stage.name)
    original_summary = json.loads((original / stage.run / "eval" / "test" / "summary.json").read_text())["summary"]
    assert row["overall"]["dice"]["mean"] == pytest.approx(original_summary["overall"]["dice"]["mean"])


def test_an_experiment_can_grow_without_retraining(experiment, tmp_path, phantom_data, write_experiment):
    path, out, _ = experiment
    raw = yaml.safe_load(path.read_text())
    added = {"name": "kd-mean", "model": "unet-tiny", "steps": 20, "teachers": ["site"], "distill": {"aggregate": "mean"}}
    grown = write_experiment(tmp_path / "grown.yaml", phantom_data, students=[*raw["students"], added])
    console = quiet()
    run_experiment(load_experiment(grown), out, dry_run=True, console=console)
    statuses = plan_statuses(output(console))
    assert statuses == {**{name: "done" for name in STAGES}, "student-kd-mean-seed0": "new"}


def test_refuses_a_folder_holding_something_else(experiment, tmp_path, phantom_data, write_experiment):
    path, out, _ = experiment
    raw = yaml.safe_load(path.read_text())
    raw["students"][0]["steps"] = 30
    changed = write_experiment(tmp_path / "changed.yaml", phantom_data, students=raw["students"])
    with pytest.raises(RunDirError, match=r"stage student-scratch-seed0 was trained with train\.epochs = 2, "
                                          r".*changed\.yaml now gives 3 .*--overwrite"):
        run_experiment(load_experiment(changed), out, dry_run=True, console=quiet())
    other_split = write_experiment(tmp_path / "split.yaml", phantom_data, split={**yaml.safe_load(path.read_text())["split"], "seed": 1})
    with pytest.raises(RunDirError, match=r"holds a different experiment: split\.seed is 0 there but 1"):
        run_experiment(load_experiment(other_split), out, dry_run=True, console=quiet())
    console = quiet()
    run_experiment(load_experiment(changed), out, dry_run=True, overwrite=True, console=console)
    assert "resume" not in output(console) and (out / "plan.json").is_file()  # a dry run deletes nothing
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no experiment.yaml"):
        run_experiment(load_experiment(path), other, console=quiet())


def test_cli_dry_run_and_one_line_errors(experiment, tmp_path):
    path, out, _ = experiment
    result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out), "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "student-kd-seed0" in result.output and "new" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("name: scratch", "name: scratch\n  teachers: [fulll]", 1))
    result = CliRunner().invoke(app, ["experiment", str(bad), "--out", str(tmp_path / "x")], catch_exceptions=False)
    assert result.exit_code == 1
    assert "students[0].teachers: unknown teacher 'fulll' (known: full, site)" in result.output.replace("\n", "")
    assert not (tmp_path / "x").exists()


def test_a_key_added_in_a_later_version_does_not_invalidate_a_finished_stage(experiment, tmp_path):
    path, out, _ = experiment
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    stored = copy / "runs" / "student-kd-seed0" / "config.yaml"
    older = yaml.safe_load(stored.read_text())
    del older["distill"]["pseudo"]  # as written before the pseudo-label term existed
    stored.write_text(yaml.safe_dump(older))
    console = quiet()
    run_experiment(load_experiment(path), copy, dry_run=True, console=console)
    assert "student-kd-seed0" in output(console) and "new" not in output(console)


def test_a_stage_trained_with_the_old_warmup_rule_is_a_recipe_change(experiment, tmp_path):
    path, original, _ = experiment
    config = load_experiment(path)
    stage = next(stage for stage in make_plan(config, load_cases(config.data)) if stage.name == "student-scratch-seed0")
    run = tmp_path / stage.run
    shutil.copytree(original / stage.run, run, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    stored = yaml.safe_load((run / "config.yaml").read_text())
    del stored["train"]["warmup_fraction"]  # as written before the key existed: its default is filled in
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    assert recipe_difference(tmp_path, stage) is None
    stored["train"]["warmup_epochs"] = 1  # the old default: one epoch of the stage's two
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    assert recipe_difference(tmp_path, stage) == ("train.warmup_epochs", 1, None)


def test_cli_experiment_failing_in_its_first_stage_leaves_nothing(damaged_phantom, tmp_path, write_experiment):
    one_teacher = [{"name": "full", "model": "unet-tiny", "steps": 10}]
    path = write_experiment(tmp_path / "one.yaml", damaged_phantom.datalist, teachers=one_teacher, students=[])
    mine = tmp_path / "mine"
    mine.mkdir()
    for out in (tmp_path / "exp", mine):
        result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 1
        assert "error:" in result.output and "imagesTr" in result.output
    assert not (tmp_path / "exp").exists()
    assert (mine / "experiment.yaml").is_file() and not (mine / "runs").exists()  # kept; the stage's folder removed

    damaged_phantom.repair()
    result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(tmp_path / "exp")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exp" / "runs" / "teacher-full-seed0" / "checkpoints" / "last.pt").is_file()


def test_a_stage_whose_split_would_leak_a_teachers_training_case_is_refused(experiment, tmp_path):
    path, out, _ = experiment
    config = load_experiment(path)
    stage = next(stage for stage in make_plan(config, load_cases(config.data)) if stage.name == "student-kd-seed0")
    moved = load_split(out / "runs" / "teacher-full-seed0" / "split.json")["train"][0]
    leaky = {**stage.split, "train": [c for c in stage.split["train"] if c != moved], "test": [*stage.split["test"], moved]}
    with pytest.raises(ConfigError, match=rf"^teacher .+: trained on case {moved} that is in this run's test split"):
        stages.train_stage(config.data, tmp_path / "kd", stage.run_config(out), leaky)
    assert not (tmp_path / "kd").exists()


def test_dry_run_at_80_columns_estimates_each_stage_and_the_total(phantom_data, tmp_path, write_experiment,
                                                                  assert_readable):
    teachers = [{"name": "full", "model": "unet-large", "steps": 20, "field_of_view": True}]
    students = [{"name": "scratch", "model": "unet-small", "steps": 20, "seeds": [0, 1]},
                {"name": "kd-with-a-name-too-long-for-one-line", "model": "unet-small", "steps": 20, "teachers": ["full"]},
                {"name": "tiny", "model": "unet-tiny", "steps": 20}]
    path = write_experiment(tmp_path / "e.yaml", phantom_data, teachers=teachers, students=students)
    config = load_experiment(path)
    console = Console(width=80, file=io.StringIO())
    run_experiment(config, tmp_path / "out", dry_run=True, console=console)
    text = output(console)
    plan = make_plan(config, load_cases(config.data))
    assert_readable(text, [stage.name for stage in plan])
    lines = text.splitlines()
    below = lines[lines.index("student-tiny-seed0") + 1].split()
    assert below == ["unet-tiny", "–", "20", "steps", "?", "new"]  # no measured cost for unet-tiny
    models = {stage.name: stage.model for stage in plan}
    known = [stage_seconds(s.config, s.split, [models[t] for t in s.teachers], field_of_view=s.field_of_view)
             for s in plan if s.model != "unet-tiny"]
    teacher = plan[0]
    assert teacher.field_of_view and not any(s.field_of_view for s in plan[1:])
    assert known[0] > stage_seconds(teacher.config, teacher.split)  # the field-of-view predictions of its test cases
    assert " ".join(text.split()).endswith(f"5 stages, 5 to train: {format_duration(sum(known))} (an estimate from "
                                          "measured step costs, 2 threads), plus 1 stage(s) of models without a "
                                          "measured step cost")
    assert not (tmp_path / "out").exists()


def test_results_tables_read_at_80_columns(experiment, assert_readable):
    _, _, results = experiment
    console = Console(width=80, file=io.StringIO())
    console.print(groups_table(results))
    console.print(comparisons_table(results["comparisons"]))
    groups = [group["group"] for group in results["groups"]]
    teachers = [comparison["best_teacher"] for comparison in results["comparisons"]]
    assert_readable(output(console), [*groups, *teachers])
    assert "student-kd" in groups and teachers


def test_other_latency_repeats_retime_every_model_and_train_nothing(
    experiment, tmp_path, phantom_data, write_experiment, monkeypatch
):
    _, original, _ = experiment
    out = tmp_path / "out"
    shutil.copytree(original, out)
    more = write_experiment(tmp_path / "more.yaml", phantom_data, efficiency={"threads": 1, "repeats": 3})

    def no_training(*args, **kwargs):
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(stages, "train_run", no_training)
    console = quiet()
    results = run_experiment(load_experiment(more), out, console=console)
    assert f"efficiency: {len(STAGES)} models timed together, 3 repeats each" in output(console)
    assert results["latency"] == {"threads": 1, "repeats": 3, "volume_repeats": 3}
    assert all(json.loads((out / "runs" / name / "efficiency.json").read_text())["repeats"] == 3 for name in STAGES)


def test_overwrite_refuses_a_folder_that_is_not_an_experiment(tmp_path, phantom_data, write_experiment):
    path = write_experiment(tmp_path / "tiny.yaml", phantom_data)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("years of work")
    for dry_run in ([], ["--dry-run"]):
        result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(thesis), "--overwrite", *dry_run],
                                    catch_exceptions=False)
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert (f"{thesis}: not a prokd experiment folder (it holds thesis.txt); refusing to delete it with "
                "--overwrite") in result.output
        assert [p.name for p in thesis.iterdir()] == ["thesis.txt"]
    (thesis / "thesis.txt").unlink()
    (thesis / "runs").mkdir()  # an experiment's name, but no experiment.yaml or plan.json
    with pytest.raises(RunDirError, match=r"not a prokd experiment folder \(it has no experiment\.yaml\)"):
        run_experiment(load_experiment(path), thesis, overwrite=True, console=quiet())
    assert (thesis / "runs").is_dir()


def test_a_student_without_labels_is_compared_with_its_baseline_its_teachers_and_their_ensemble(
    phantom_data, tmp_path, write_experiment
):
    """Regime C with the site teachers of a saved split: the held-out site's own teacher is left out, the others
    are evaluated on the held-out site's cases, and the student is compared with them there."""
    index = load_cases(phantom_data)
    (tmp_path / "split.json").write_text(json.dumps(holdout_split(index.labeled, 0.2, 0.2, seed=0)))
    teachers = [{"name": "site", "model": "unet-tiny", "steps": 20, "by": "site"}]
    students = [
        {"name": "three-sites", "model": "unet-tiny", "steps": 20, "test_site": "SiteD"},
        {"name": "no-labels", "model": "unet-tiny", "steps": 20, "test_site": "SiteD", "teachers": ["site"],
         "baseline": "three-sites", "ensemble": True,
         "distill": {"no_labels": True, "pseudo": 1.0, "cache_teachers": True}},
    ]
    path = write_experiment(tmp_path / "regime-c.yaml", phantom_data, split={"file": "split.json"},
                            teachers=teachers, students=students)
    out = tmp_path / "out"
    results = run_experiment(load_experiment(path), out, console=quiet())
    others = [out.resolve() / "runs" / f"teacher-site-{site}-seed0" for site in ("SiteA", "SiteB", "SiteC")]
    student = out / "runs" / "student-no-labels-seed0"
    ensemble = json.loads((student / "eval" / "teachers-ensemble" / "summary.json").read_text())
    assert ensemble["checkpoint"] == [str(run / "checkpoints" / "best.pt") for run in others]
    site_d = sorted(c.case_id for c in index.labeled if c.site == "SiteD")
    for folder in ["teachers-ensemble", *(f"teacher-{run.name}" for run in others)]:
        assert [row["case"] for row in csv.DictReader((student / "eval" / folder / "cases.csv").open())] == site_d
    rows = {row["stage"]: row for row in results["rows"]}
    assert set(rows["student-three-sites-seed0"]["sites"]) == set(rows["student-no-labels-seed0"]["sites"]) == {"SiteD"}
    label_free = rows["student-no-labels-seed0"]
    assert (label_free["labeled_cases"], label_free["slices"]) == (0, {"batch": 8, "unlabeled": 8.0})
    log = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert all({"kl", "pseudo"} <= set(record) and not {"dice", "val_dice"} & set(record) for record in log)
    (comparison,) = results["comparisons"]
    assert (comparison["baseline"], comparison["teachers"]) == ("student-three-sites", 3)
    assert comparison["ensemble_dice"] == ensemble["summary"]["overall"]["dice"]["mean"]
    on_site_d = {run.name: json.loads((student / "eval" / f"teacher-{run.name}" / "summary.json").read_text())
                 for run in others}
    assert label_free["teachers_dice"] == {name: s["summary"]["overall"]["dice"]["mean"] for name, s in on_site_d.items()}
    assert comparison["best_teacher_dice"] == max(label_free["teachers_dice"].values())
    own_site = (out / "results" / "results.md").read_text().split("## Own site and other sites")[1]
    assert all(f"| teacher-site-{site} | {site} | " in own_site for site in ("SiteA", "SiteB", "SiteC", "SiteD"))
    assert "; vs its teachers' ensemble: " in verdict_lines(results)[0]
