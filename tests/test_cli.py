"""CLI smoke tests through typer's runner: every verb on a tiny phantom run, and one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from prokd.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained_run(phantom_data, tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=2, steps_per_epoch=5).to_dict()))
    result = invoke("train", "--data", phantom_data, "--out", folder / "run", "--config", config, "--set", "train.seed=3")
    assert result.exit_code == 0, result.output
    assert "best val Dice" in result.output
    return folder / "run"


def test_data_check_prints_site_table(phantom_data):
    result = invoke("data", "check", phantom_data)
    assert result.exit_code == 0, result.output
    for site in ("SiteA", "SiteB", "SiteC", "SiteD"):
        assert site in result.output


def test_train_records_overrides(trained_run):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["train"]["seed"] == 3 and config["preprocess"]["size"] == 64


def test_evaluate_writes_tables(trained_run, phantom_data):
    result = invoke("evaluate", trained_run, "--data", phantom_data, "--cases")
    assert result.exit_code == 0, result.output
    assert "overall" in result.output
    summary = json.loads((trained_run / "eval" / "test" / "summary.json").read_text())
    assert 0.0 <= summary["summary"]["overall"]["dice"]["mean"] <= 1.0
    assert (trained_run / "eval" / "test" / "cases.csv").read_text().startswith("case,site,dice")


def test_predict_folder_and_refuse_overwrite(trained_run, phantom_data, tmp_path):
    images = phantom_data.parent / "imagesTr"
    result = invoke("predict", trained_run, images, "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pred").glob("*_mask.nii.gz"))) == len(list(images.glob("*.nii.gz")))
    again = invoke("predict", trained_run, images, "--out", tmp_path / "pred")
    assert again.exit_code == 1 and "already exists" in again.output


def test_export_then_predict_with_onnx(trained_run, phantom_data, tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "student.onnx"
    result = invoke("export", trained_run, "--out", model)
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime" in result.output and model.is_file()
    image = sorted((phantom_data.parent / "imagesTr").glob("*.nii.gz"))[0]
    predicted = invoke("predict", model, image, "--out", tmp_path / "pred")
    assert predicted.exit_code == 0, predicted.output
    assert len(list((tmp_path / "pred").glob("*_mask.nii.gz"))) == 1
    again = invoke("export", trained_run, "--out", model)
    assert again.exit_code == 1 and "already exists" in again.output


def test_train_refuses_existing_run(trained_run, phantom_data):
    result = invoke("train", "--data", phantom_data, "--out", trained_run, "--epochs", "1")
    assert result.exit_code == 1
    assert "not empty" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "missing.json", "--out", "x"], "missing.json"),
        (["train", "--data", "d", "--out", "x", "--set", "train.lrr=1"], "train.lrr"),
        (["evaluate", "no_run", "--data", "d"], "no_run"),
        (["predict", "no_run", "nothing.nii.gz", "--out", "o"], "nothing.nii.gz"),
    ],
)
def test_bad_input_is_one_line_error(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.output


def test_models_lists_registry():
    result = invoke("models")
    assert result.exit_code == 0
    assert "unet-large" in result.output and "unet-small" in result.output


def test_data_check_on_promise12(promise12):
    result = invoke("data", "check", promise12)
    assert result.exit_code == 0, result.output
    for site in ("BIDMC", "UCL", "RUNMC", "HK"):
        assert site in result.output


def test_data_phantom_writes_a_dataset_and_refuses_to_overwrite_it(tmp_path):
    out = tmp_path / "phantom"
    result = runner.invoke(app, ["data", "phantom", str(out), "--cases-per-site", "2", "--unlabeled-per-site", "1"])
    assert result.exit_code == 0, result.output
    datalist = json.loads((out / "dataset.json").read_text())
    assert len(datalist["training"]) == 8 and len(datalist["unlabeled"]) == 4
    again = runner.invoke(app, ["data", "phantom", str(out)])
    assert again.exit_code == 1 and "dataset.json exists" in again.output
