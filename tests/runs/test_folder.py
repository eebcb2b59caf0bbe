"""``--overwrite`` deletes only a folder that is prokd's own, and only once the new command's inputs and options are
validated: a user's folder is refused in one line, and a typo leaves a finished run as it was (issue 15, item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from prokd.cli import app
from prokd.runs.folder import RUN_FOLDER, RunDirError, check_replaceable, prepare_run_dir
from prokd.train.teachers import TEACHERS_FOLDER, train_teachers


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def files_of(folder: Path) -> dict[Path, tuple[bytes, int]]:
    """``{file: (bytes, mtime_ns)}`` of everything under ``folder``."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory, tiny_config) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    config = tiny_config(epochs=1, steps_per_epoch=2).to_dict()
    config["model"]["name"] = "unet-tiny"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def teacher(phantom_data, tmp_path_factory, tiny_yaml) -> Path:
    """A finished tiny RUN folder (one epoch of two steps)."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    result = invoke("train", "--data", phantom_data, "--out", run, "--config", tiny_yaml)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def finished(teacher, tmp_path) -> Path:
    """A copy of the finished run (file times kept) with an evaluation, the folder a command will overwrite."""
    run = shutil.copytree(teacher, tmp_path / "finished")
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "summary.json").write_text("{}")
    return run


def test_the_rule_accepts_prokd_folders_only(teacher, tmp_path):
    check_replaceable(teacher, RUN_FOLDER)
    check_replaceable(tmp_path / "absent", RUN_FOLDER)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", RUN_FOLDER)

    mixed = shutil.copytree(teacher, tmp_path / "mixed")
    (mixed / "thesis.txt").write_text("years of work")
    with pytest.raises(RunDirError, match=r"mixed: not a prokd run folder \(it holds thesis\.txt\); refusing"):
        check_replaceable(mixed, RUN_FOLDER)
    (mixed / "thesis.txt").unlink()
    (mixed / "split.json").unlink()
    with pytest.raises(RunDirError, match=r"\(it has no split\.json\)"):
        check_replaceable(mixed, RUN_FOLDER)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunDirError, match=r"not a prokd run folder \(it is a file\)"):
        prepare_run_dir(tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "not a folder"

    teachers = tmp_path / "teachers"
    (teachers / "splits").mkdir(parents=True)
    (teachers / "config.yaml").write_text("{}")
    (teachers / "splits" / "SiteA.json").write_text("{}")
    shutil.copytree(teacher, teachers / "SiteA")
    check_replaceable(teachers, TEACHERS_FOLDER)
    (teachers / "SiteB").mkdir()  # no splits/SiteB.json: not a teacher of this folder
    with pytest.raises(RunDirError, match=r"not a prokd teachers folder \(it holds SiteB\)"):
        check_replaceable(teachers, TEACHERS_FOLDER)


@pytest.mark.parametrize("command", ["train", "distill", "train-teachers"])
def test_overwrite_refuses_a_folder_that_is_not_prokds(command, phantom_data, teacher, tmp_path, tiny_yaml):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("years of work")
    extra = {"train": [], "distill": ["--teacher", teacher], "train-teachers": ["--by", "site"]}[command]
    result = invoke(command, "--data", phantom_data, "--out", thesis, "--config", tiny_yaml, *extra, "--overwrite")
    line = one_line_error(result)
    assert f"{thesis}: not a prokd " in line and "(it holds thesis.txt); refusing to delete it with --overwrite" in line
    assert [p.name for p in thesis.iterdir()] == ["thesis.txt"]
    assert (thesis / "thesis.txt").read_text() == "years of work"


def test_a_bad_option_or_input_leaves_the_finished_run_untouched(
    finished, teacher, phantom_data, damaged_phantom, tmp_path, tiny_yaml
):
    before = files_of(finished)
    distill = ["distill", "--data", phantom_data, "--out", finished, "--config", tiny_yaml, "--overwrite"]
    attempts = {
        "unknown aggregator 'median'": [*distill, "--teacher", teacher, "--set", "distill.aggregate=median"],
        "no_such_teacher": [*distill, "--teacher", tmp_path / "no_such_teacher"],
        f"holds the teacher {finished}": [*distill, "--teacher", finished],  # it would delete its own teacher
        "unknown model 'unet-tinyy'": [*distill, "--teacher", teacher, "--student", "unet-tinyy"],
        "imagesTr": ["train", "--data", damaged_phantom.datalist, "--out", finished, "--config", tiny_yaml, "--overwrite"],
    }
    for message, args in attempts.items():
        assert message in one_line_error(invoke(*args))
        assert files_of(finished) == before, f"{message}: the finished run was changed"


def test_overwrite_replaces_a_run_folder_once_the_options_are_valid(finished, phantom_data, tiny_yaml):
    old_checkpoint = (finished / "checkpoints" / "last.pt").stat().st_mtime_ns
    result = invoke("train", "--data", phantom_data, "--out", finished, "--config", tiny_yaml, "--seed", "5", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (finished / "eval").exists(), "the old run's files are gone"
    assert (finished / "checkpoints" / "last.pt").stat().st_mtime_ns != old_checkpoint
    assert yaml.safe_load((finished / "config.yaml").read_text())["train"]["seed"] == 5


def test_train_teachers_checks_its_options_before_replacing_its_folder(phantom_data, tmp_path, tiny_config):
    out = tmp_path / "teachers"
    (out / "splits").mkdir(parents=True)
    (out / "config.yaml").write_text("{}")
    (out / "teachers.json").write_text("{}")
    before = files_of(out)
    with pytest.raises(ValueError, match="--by must be"):
        train_teachers(phantom_data, out, tiny_config(), by="sites", overwrite=True)
    assert files_of(out) == before
