"""CLI smoke tests through typer's runner: every verb on a tiny phantom run, and one-line errors."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from prokd.cli import app, teachers_table
from prokd.config import DistillConfig, RunConfig
from prokd.models import list_models

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained_run(phantom_data, tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=2, steps_per_epoch=5).to_dict()))
    result = invoke("train", "--data", phantom_data, "--out", folder / "run", "--config", config, "--set", "train.seed=3",
                    "--unlabeled", "test")
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
    assert config["unlabeled_include_test"] is True


def test_evaluate_writes_tables(trained_run, phantom_data):
    result = invoke("evaluate", trained_run, "--data", phantom_data, "--cases")
    assert result.exit_code == 0, result.output
    assert "overall" in result.output
    summary = json.loads((trained_run / "eval" / "test" / "summary.json").read_text())
    assert 0.0 <= summary["summary"]["overall"]["dice"]["mean"] <= 1.0
    assert (trained_run / "eval" / "test" / "cases.csv").read_text().startswith("case,site,dice")


def zonal_datalist(phantom_data: Path, folder: Path) -> Path:
    """The phantom's labeled cases with zonal masks: 1 below the gland's median slice, 2 from it up."""
    listing = json.loads(phantom_data.read_text())
    root = phantom_data.parent
    training = []
    for entry in listing["training"]:
        label = nib.load(root / entry["label"])
        zones = np.asarray(label.dataobj).astype(np.uint8)
        middle = int(np.median(np.nonzero(zones)[2]))
        zones[:, :, middle:] *= 2
        zonal = folder / f"{entry['case']}_zones.nii.gz"
        nib.save(nib.Nifti1Image(zones, label.affine, label.header), zonal)
        training.append({**entry, "image": str(root / entry["image"]), "label": str(zonal)})
    datalist = folder / "zonal.json"
    datalist.write_text(json.dumps({"training": training}))
    return datalist


def per_case_dice(run: Path) -> dict[str, str]:
    with (run / "eval" / "test" / "cases.csv").open() as handle:
        return {row["case"]: row["dice"] for row in csv.DictReader(handle)}


def test_evaluate_maps_zonal_labels_to_the_whole_gland(trained_run, phantom_data, tmp_path):
    zonal = zonal_datalist(phantom_data, tmp_path)
    unmapped = invoke("evaluate", trained_run, "--data", zonal)
    assert unmapped.exit_code == 1 and "_zones.nii.gz: label values 2 are not in {0, 1}" in unmapped.output
    assert invoke("evaluate", trained_run, "--data", phantom_data).exit_code == 0
    whole_gland = per_case_dice(trained_run)
    mapped = invoke("evaluate", trained_run, "--data", zonal, "--label-map", "1:1,2:1")
    assert mapped.exit_code == 0, mapped.output
    assert per_case_dice(trained_run) == whole_gland


def test_predict_folder_and_refuse_overwrite(trained_run, phantom_data, tmp_path):
    images = phantom_data.parent / "imagesTr"
    result = invoke("predict", trained_run, images, "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pred").glob("*_mask.nii.gz"))) == len(list(images.glob("*.nii.gz")))
    again = invoke("predict", trained_run, images, "--out", tmp_path / "pred")
    assert again.exit_code == 1 and "already exists" in again.output


def test_predict_with_uncertainty_writes_entropy_maps_and_flags_by_score(trained_run, phantom_data, tmp_path):
    images = sorted((phantom_data.parent / "imagesTr").glob("*.nii.gz"))[:2]
    result = invoke("predict", trained_run, *images, "--out", tmp_path / "pred", "--uncertainty", "--review-above", "0")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "uncertainty" in line]
    assert len(lines) == 2 and all(line.endswith("REVIEW") for line in lines)
    assert len(list((tmp_path / "pred").glob("*_entropy.nii.gz"))) == 2
    assert not list((tmp_path / "pred").glob("*_disagreement.nii.gz")), "a run without teachers has no disagreement"
    calm = invoke("predict", trained_run, images[0], "--out", tmp_path / "calm", "--uncertainty", "--review-above", "1e9",
                  "--flip-tta")
    assert calm.exit_code == 0 and "uncertainty" in calm.output and "REVIEW" not in calm.output
    scores = [float(line.split("uncertainty ")[1].split()[0]) for line in (lines[0], calm.output)]
    assert scores[0] != scores[1], "the mirror image's prediction is averaged in"


def test_predict_with_locate_then_segment_and_its_refusal_for_a_run_without_the_training_range(
    trained_run, phantom_data, tmp_path
):
    image = sorted((phantom_data.parent / "imagesTr").glob("*.nii.gz"))[0]
    result = invoke("predict", trained_run, image, "--out", tmp_path / "pred", "--relocate", 2)
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "pred" / image.name.replace(".nii.gz", "_mask.nii.gz")).shape == nib.load(image).shape
    payload = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=False)
    payload["postprocess"]["gland_extents"] = None  # as in a run trained before locate-then-segment
    torch.save(payload, tmp_path / "old.pt")
    result = invoke("predict", tmp_path / "old.pt", image, "--out", tmp_path / "old", "--relocate", 1)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "postprocess.relocate needs postprocess.gland_extents" in result.output and not (tmp_path / "old").exists()


def test_predict_at_several_framings_and_its_refusal_of_a_bad_zoom(trained_run, phantom_data, tmp_path):
    image = sorted((phantom_data.parent / "imagesTr").glob("*.nii.gz"))[0]
    result = invoke("predict", trained_run, image, "--out", tmp_path / "pred", "--framings", "0.7,1,1.5")
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "pred" / image.name.replace(".nii.gz", "_mask.nii.gz")).shape == nib.load(image).shape
    for bad, message in (("1,x", "--framings must list zooms"), ("1,-2", "postprocess.framings")):
        result = invoke("predict", trained_run, image, "--out", tmp_path / "bad", "--framings", bad)
        assert result.exit_code == 1 and message in result.output and not (tmp_path / "bad").exists(), result.output


def test_predict_refuses_inputs_that_would_write_the_same_mask_before_writing_any(trained_run, phantom_data, tmp_path):
    first = sorted((phantom_data.parent / "imagesTr").glob("*.nii.gz"))[:2]
    other = tmp_path / "other"
    other.mkdir()
    (other / first[1].name).write_bytes(first[1].read_bytes())  # same file name as an input from another folder
    result = invoke("predict", trained_run, *first, other / first[1].name, "--out", tmp_path / "pred")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "both would be written to" in result.output and first[1].name.replace(".nii.gz", "_mask.nii.gz") in result.output
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir()), "nothing written"


def test_predict_reads_every_input_before_writing_any_mask(trained_run, phantom_data, tmp_path):
    first, second, third = sorted((phantom_data.parent / "imagesTr").glob("*.nii.gz"))[:3]
    batch = tmp_path / "batch"
    batch.mkdir()
    for image in (first, third):
        (batch / image.name).write_bytes(image.read_bytes())
    corrupt = batch / second.name
    corrupt.write_bytes(second.read_bytes()[: second.stat().st_size // 2])  # a gzip cut in the middle
    result = invoke("predict", trained_run, batch / first.name, corrupt, batch / third.name, "--out", tmp_path / "pred")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"error: {corrupt}: cannot read .nii.gz file")
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir()), "no mask written"


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


def test_calibrate_writes_the_temperature_and_prints_nll_and_ece(trained_run, phantom_data, assert_readable):
    result = invoke("calibrate", trained_run, "--data", phantom_data)
    assert result.exit_code == 0, result.output
    stored = json.loads((trained_run / "calibration.json").read_text())
    words = " ".join(result.output.split())
    assert f"temperature {stored['temperature']:.3f}, fitted on {len(stored['cases'])} validation case" in words
    assert f"{stored['after']['ece']:.4f}" in result.output and f"{stored['nll_before']:.4f}" in result.output
    assert_readable(result.output)


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
        (["train", "--data", "d", "--out", "x", "--minutes", "0"], "train.time_budget_minutes"),
        (["train", "--data", "d", "--out", "x", "--minutes", "-1"], "train.time_budget_minutes"),
        (["train", "--data", "d", "--out", "x", "--set", "train.lr=.inf"], "'train.lr' must be a finite positive"),
        (["train", "--data", "d", "--out", "x", "--set", "train.val_every=0"], "'train.val_every' must be >= 1"),
        (["distill", "--data", "d", "--out", "x"], "distill needs a teacher"),
    ],
)
def test_bad_input_is_one_line_error(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir()), "a refused command creates nothing"


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


def two_channel_datalist(phantom_data: Path, folder: Path) -> Path:
    """Six of the phantom's labeled cases as MSD Task05_Prostate stores them: 4D images, T2 (channel 0) and an
    ADC-like inverted copy (channel 1)."""
    listing = json.loads(phantom_data.read_text())
    root = phantom_data.parent
    training = []
    for entry in listing["training"][::2]:
        t2 = nib.load(root / entry["image"])
        data = np.asarray(t2.dataobj)
        image = folder / f"{entry['case']}_t2_adc.nii.gz"
        nib.save(nib.Nifti1Image(np.stack([data, data.max() - data], axis=-1), t2.affine), image)
        training.append({**entry, "image": str(image), "label": str(root / entry["label"])})
    datalist = folder / "msd.json"
    datalist.write_text(json.dumps({"training": training}))
    return datalist


def test_the_t2_channel_of_4d_images_is_chosen_once_and_kept_by_the_run(phantom_data, tmp_path, tiny_config):
    data = two_channel_datalist(phantom_data, tmp_path)
    refused = invoke("data", "check", data)
    message = " ".join(refused.output.split())  # rich wraps long lines
    assert refused.exit_code == 1 and "t2_adc.nii.gz: has 2 channels" in message and "choose one with --channel N" in message
    assert invoke("data", "check", data, "--channel", "0").exit_code == 0
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1, steps_per_epoch=2).to_dict()))
    trained = invoke("train", "--data", data, "--out", tmp_path / "run", "--config", config, "--channel", "0")
    assert trained.exit_code == 0, trained.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["preprocess"]["channel"] == 0
    image = Path(json.loads(data.read_text())["training"][0]["image"])
    assert invoke("predict", tmp_path / "run", image, "--out", tmp_path / "pred").exit_code == 0  # the run's channel
    mask = nib.load(next((tmp_path / "pred").glob("*_mask.nii.gz")))
    assert mask.shape == nib.load(image).shape[:3] and np.allclose(mask.affine, nib.load(image).affine)
    assert invoke("evaluate", tmp_path / "run", "--data", data).exit_code == 0
    wrong = invoke("predict", tmp_path / "run", image, "--out", tmp_path / "adc", "--channel", "2")
    assert wrong.exit_code == 1 and "channel 2 does not exist" in wrong.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"prokd {importlib.metadata.version('prokd')}\n"


@pytest.mark.parametrize(
    "command, option, default",
    [
        ("train", "--epochs", f"from --config, else {RunConfig().train.epochs}"),
        ("train", "--model", f"from --config, else {RunConfig().model.name}"),
        ("train", "--minutes", "from --config, else no time budget"),
        ("distill", "--aggregate", f"from --config, else {DistillConfig().aggregate}"),
        ("train-teachers", "--jobs", "1"),
        ("evaluate", "--split", "test"),
        ("data check", "--label-map", "none: labels must be 0 or 1"),
        ("demo", "--out", "prokd-demo"),
    ],
)
def test_help_shows_every_default(command, option, default):
    result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if f" {option} " in line)
    end = next(i for i in range(start + 1, len(lines)) if re.match(r"[│╰]\s+(-|$)", lines[i]) or lines[i].startswith("╰"))
    entry = " ".join(line.strip("│ ") for line in lines[start:end])
    assert re.search(rf"\[default: \(?{re.escape(default)}\)?\]", entry), entry


def test_models_at_80_columns(assert_readable):
    result = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert_readable(result.output, [spec.name for spec in list_models()])


def test_teachers_table_at_80_columns(assert_readable):
    names = [f"teacher-{site}" for site in ("Radboud-University-Nijmegen", "Beth-Israel-Deaconess", "HK")]
    records = [{"name": name, "train_cases": ["a", "b"], "val_dice": 0.8, "train_minutes": 12.5} for name in names]
    console = Console(width=80, file=io.StringIO())
    console.print(teachers_table(records, "site"))
    assert_readable(console.file.getvalue(), names)


def test_training_piped_to_a_log_has_plain_progress_lines(phantom_data, tmp_path, tiny_config):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=2, steps_per_epoch=2).to_dict()))
    result = runner.invoke(app, ["train", "--data", str(phantom_data), "--out", str(tmp_path / "run"), "--config",
                                 str(config)], env={"TERM": "xterm-256color", "COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output and "\r" not in result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines if "% epoch" in line] == ["25%", "50%", "75%", "100%"]
    assert sum(line.endswith(tuple("0123456789")) and ": val Dice " in line for line in lines) == 2
