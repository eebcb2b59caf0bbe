"""CLI verbs from a working folder with relative paths, as a new user types them: command-line paths are relative
to the current folder, paths inside a YAML file relative to that file (``prokd demo --out demo``: tests/test_demo.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prokd.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def workdir(phantom_data, tmp_path_factory, tiny_config):
    """A working folder holding ``phantom/`` and ``configs/``; the tests run inside it."""
    folder = tmp_path_factory.mktemp("workdir")
    shutil.copytree(phantom_data.parent, folder / "phantom")
    configs = folder / "configs"
    configs.mkdir()
    tiny = tiny_config(epochs=1, steps_per_epoch=3).to_dict()
    (configs / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    kd = {**tiny, "distill": {"teachers": ["../runs/teacher"], "cache_teachers": True}}
    (configs / "kd.yaml").write_text(yaml.safe_dump(kd))
    experiment = {
        "name": "relative",
        "data": "../phantom",
        "run": {k: tiny[k] for k in ("preprocess", "augment", "split")} | {"train": {"steps_per_epoch": 3}},
        "efficiency": {"threads": 1, "repeats": 1},
        "teachers": [{"name": "full", "model": "unet-small", "steps": 3}],
        "students": [{"name": "kd", "model": "unet-small", "steps": 3, "teachers": ["full"]}],
    }
    (configs / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    previous = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(previous)


def test_train_distill_evaluate_predict_with_relative_paths(workdir):
    invoke("train", "--data", "phantom", "--out", "runs/teacher", "--config", "configs/tiny.yaml")
    split = json.loads(Path("runs/teacher/split.json").read_text())
    Path("split.json").write_text(json.dumps({key: split[key] for key in ("train", "val", "test")}))
    invoke("train", "--data", "phantom", "--out", "runs/fixed", "--config", "configs/tiny.yaml", "--split", "split.json")
    invoke("distill", "--data", "phantom", "--teacher", "runs/teacher", "--out", "runs/kd", "--config", "configs/tiny.yaml")
    # the teacher written inside configs/kd.yaml is relative to that file, not to the working folder
    invoke("distill", "--data", "phantom", "--out", "runs/kd-yaml", "--config", "configs/kd.yaml")
    for run in ("runs/kd", "runs/kd-yaml"):
        teachers = yaml.safe_load(Path(run, "config.yaml").read_text())["distill"]["teachers"]
        assert teachers == [str(workdir / "runs" / "teacher")]
    invoke("evaluate", "runs/kd", "--data", "phantom")
    assert Path("runs/kd/eval/test/summary.json").is_file()
    invoke("predict", "runs/kd", "phantom/imagesTr", "--out", "masks")
    assert len(list(Path("masks").glob("*_mask.nii.gz"))) == len(list(Path("phantom/imagesTr").glob("*.nii.gz")))


def test_experiment_and_report_with_relative_paths(workdir):
    invoke("experiment", "configs/experiment.yaml", "--out", "experiments/e")
    assert Path("experiments/e/runs/student-kd-seed0/checkpoints/best.pt").is_file()
    stored = yaml.safe_load(Path("experiments/e/experiment.yaml").read_text())
    assert stored["data"] == str(workdir / "phantom")
    invoke("report", "experiments/e")
    assert Path("experiments/e/report/index.html").is_file()

