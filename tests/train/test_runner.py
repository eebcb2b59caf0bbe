"""A training command that fails before its first checkpoint leaves no folder behind; one that existed stays.
A run's unlabeled pool holds the dataset's test images only when its config asks for them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prokd.cli import app
from prokd.data.datalist import DatasetError
from prokd.runs.folder import first_missing, removed_on_failure
from prokd.train.runner import prepare_run, train_run

TINY = ["--set", "train.steps_per_epoch=2", "--set", "preprocess.size=64", "--set", "preprocess.target_spacing=2.0",
        "--set", "augment.enabled=false"]


def test_removed_on_failure_deletes_only_the_folder_the_command_created(tmp_path):
    (tmp_path / "existing").mkdir()
    assert first_missing(tmp_path / "existing") is None
    assert first_missing(tmp_path / "new" / "run") == tmp_path / "new"
    for keep, exists in ((False, False), (True, True)):
        with pytest.raises(RuntimeError), removed_on_failure(first_missing(tmp_path / "new" / "run"), lambda: keep):
            (tmp_path / "new" / "run").mkdir(parents=True)
            raise RuntimeError("late failure")
        assert (tmp_path / "new").exists() is exists
    with pytest.raises(RuntimeError), removed_on_failure(first_missing(tmp_path / "existing"), lambda: False):
        raise RuntimeError("late failure")
    assert (tmp_path / "existing").is_dir()


def test_cli_train_failing_on_bad_data_leaves_nothing_and_the_corrected_command_runs(damaged_phantom, tmp_path):
    out = tmp_path / "runs" / "student"  # runs/ is created by the command too
    args = ["train", "--data", str(damaged_phantom.datalist), "--out", str(out), "--model", "unet-tiny",
            "--epochs", "1", *TINY]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert "error:" in result.output and "imagesTr" in result.output
    assert not (tmp_path / "runs").exists()

    damaged_phantom.repair()
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_folder_that_existed_before_or_holds_a_checkpoint_is_kept(damaged_phantom, phantom_data, tmp_path, tiny_config):
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(DatasetError, match="imagesTr"):
        train_run(damaged_phantom.datalist, mine, tiny_config(epochs=1, steps_per_epoch=1))
    assert mine.is_dir()

    def interrupt(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(phantom_data, tmp_path / "started", tiny_config(epochs=2, steps_per_epoch=1), on_epoch_end=interrupt)
    assert (tmp_path / "started" / "checkpoints" / "last.pt").is_file()  # resumable, so kept


def test_test_images_join_the_unlabeled_pool_only_when_asked(phantom_data, tmp_path, tiny_config):
    listing = json.loads(phantom_data.read_text())
    root = phantom_data.parent

    def absolute(entry: dict) -> dict:
        return {**entry, **{key: str(root / entry[key]) for key in ("image", "label") if key in entry}}

    listed, test = listing["unlabeled"][:2], listing["unlabeled"][2:]
    parts = {"training": listing["training"], "unlabeled": listed, "test": test}
    data = tmp_path / "with_test_images.json"
    data.write_text(json.dumps({key: [absolute(entry) for entry in entries] for key, entries in parts.items()}))
    pools = {}
    for include_test in (False, True):
        config = tiny_config()
        config.unlabeled_include_test = include_test
        prepared = prepare_run(data, tmp_path / f"include-test-{include_test}", config)
        pools[include_test] = sorted(case.case_id for case in prepared.unlabeled_cases())
    assert pools[False] == sorted(e["case"] for e in listed)
    assert pools[True] == sorted(e["case"] for e in listed + test)
