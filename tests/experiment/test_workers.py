"""Several workers on one experiment folder: a lock per stage, stages chosen by name, waiting for teachers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

from typer.testing import CliRunner

from prokd.cli import app
from prokd.experiment import load_experiment, run_experiment
from prokd.runs.lock import try_lock

STARTED = re.compile(r"\[\d+/\d+\] (\S+): (training|resuming)")

FEW_STAGES = {
    "teachers": [{"name": "full", "model": "unet-tiny", "steps": 10}],
    "students": [
        {"name": "scratch", "model": "unet-tiny", "steps": 10, "seeds": [0, 1]},
        {"name": "kd", "model": "unet-tiny", "steps": 10, "teachers": ["full"]},
    ],
}


def test_two_workers_on_one_folder_never_train_a_stage_twice(phantom_data, tmp_path, write_experiment):
    config = write_experiment(tmp_path / "exp.yaml", phantom_data, **FEW_STAGES)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "prokd", "experiment", str(config), "--out", str(out)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    plan = [stage["stage"] for stage in json.loads((out / "plan.json").read_text())]
    started = [match[0] for output in outputs for match in STARTED.findall(output)]
    assert sorted(started) == sorted(plan)  # each stage trained by exactly one worker
    assert all(started for started in (STARTED.findall(output) for output in outputs)), "one worker did nothing"
    assert sum(output.count("models timed together") for output in outputs) == 1
    results = json.loads((out / "results" / "results.json").read_text())
    assert sorted(row["stage"] for row in results["rows"]) == sorted(plan)
    assert all(row["latency_slice_ms"] is not None for row in results["rows"])
    assert not list((out / "runs").glob("*.lock"))


def test_stages_are_chosen_by_name_or_pattern(phantom_data, tmp_path, write_experiment):
    config = write_experiment(tmp_path / "exp.yaml", phantom_data, **FEW_STAGES)
    out = tmp_path / "out"

    def experiment(*stages: str):
        options = [option for stage in stages for option in ("--stage", stage)]
        return CliRunner().invoke(app, ["experiment", str(config), "--out", str(out), *options],
                                  catch_exceptions=False, env={"COLUMNS": "200"})

    result = experiment("nothing-*")
    assert result.exit_code == 1
    assert "error: --stage nothing-*: no such stage (the plan has teacher-full-seed0, " in result.output
    result = experiment("student-kd-seed0")
    assert result.exit_code == 1
    assert ("stage student-kd-seed0 needs teacher-full-seed0, which is not trained and no worker is training it "
            "(run it first: --stage teacher-full-seed0)") in result.output
    result = experiment("teacher-*", "student-scratch-seed1")
    assert result.exit_code == 0, result.output
    assert STARTED.findall(result.output) == [("teacher-full-seed0", "training"), ("student-scratch-seed1", "training")]
    assert "not timed yet: 2 stage(s) still to train (student-scratch-seed0, student-kd-seed0)" in result.output
    result = experiment("student-*")
    assert [name for name, _ in STARTED.findall(result.output)] == ["student-scratch-seed0", "student-kd-seed0"]
    assert "models timed together" in result.output


def test_a_student_waits_for_the_teacher_another_worker_holds(phantom_data, tmp_path, write_experiment):
    config = load_experiment(write_experiment(tmp_path / "exp.yaml", phantom_data, **FEW_STAGES))
    out = tmp_path / "out"
    run_experiment(config, out, stages=["teacher-*"])
    teacher_lock = try_lock(out / "runs" / "teacher-full-seed0.lock")  # another worker, still evaluating it
    worker = threading.Thread(target=run_experiment, args=(config, out),
                              kwargs={"stages": ["student-kd-seed0"], "poll_seconds": 0.05})
    worker.start()
    time.sleep(1.0)
    assert not (out / "runs" / "student-kd-seed0").exists()
    teacher_lock.release()
    worker.join(timeout=300)
    assert (out / "runs" / "student-kd-seed0" / "checkpoints" / "last.pt").is_file()


def test_a_dry_run_shows_a_stage_another_worker_holds_as_running(phantom_data, tmp_path, write_experiment):
    config = write_experiment(tmp_path / "exp.yaml", phantom_data, **FEW_STAGES)
    out = tmp_path / "out"
    run_experiment(load_experiment(config), out, stages=["teacher-*"])
    with try_lock(out / "runs" / "student-kd-seed0.lock"):
        result = CliRunner().invoke(app, ["experiment", str(config), "--out", str(out), "--dry-run"],
                                    catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"teacher-full-seed0 .* done", result.output)
    assert re.search(r"student-kd-seed0 .* running", result.output)
    assert re.search(r"student-scratch-seed0 .* new", result.output)
    assert not list((out / "runs").glob("*.lock"))
