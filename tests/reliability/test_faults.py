"""Fault injection: a run killed at any write boundary of an epoch, then resumed, ends exactly like a run that was
never interrupted (checkpoints, epoch log and ``metrics.jsonl``), for a supervised run, a distillation with a
teacher and an experiment stage; temporary files of killed writes are removed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from prokd.config import DistillConfig, RunConfig
from prokd.data.splits import load_split
from prokd.experiment.stages import train_stage
from prokd.train.loop import WRITE_POINTS, FaultHook
from prokd.runs.folder import RunDirError, check_run_dir, remove_temporaries
from prokd.train.runner import train_run

FAULTS = [(point, epoch) for epoch in (1, 2) for point in WRITE_POINTS]
FAULT_IDS = [f"{point}-epoch{epoch}" for point, epoch in FAULTS]
LEFT_BEHIND = (".metrics.jsonl.a1b2c3d4.tmp", "checkpoints/.last.pt.x_9y8z7w.tmp")
"""Zero-byte temporary files, as a kill in the middle of an atomic write leaves them."""


class Killed(BaseException):
    """A ``kill -9`` at a write boundary: nothing in prokd catches it."""


def kill_at(point: str, epoch: int) -> FaultHook:
    def hook(at: str, at_epoch: int) -> None:
        if (at, at_epoch) == (point, epoch):
            raise Killed(f"{point} of epoch {epoch}")

    return hook


def tiny_run(tiny_config) -> RunConfig:
    """2 epochs of 2 steps of unet-tiny."""
    config = tiny_config(epochs=2, steps_per_epoch=2)
    config.model.name = "unet-tiny"
    return config


@dataclass
class Scenario:
    """A run trained straight through, and how to start (with a fault hook) and resume the same run elsewhere."""

    straight: Path
    start: Callable[[Path, FaultHook], object]
    resume: Callable[[Path], object]


@pytest.fixture(scope="module")
def teacher(phantom_data, tmp_path_factory, tiny_config) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    train_run(phantom_data, run, tiny_run(tiny_config))
    return run


@pytest.fixture(scope="module", params=["train", "distillation", "stage"])
def scenario(request, phantom_data, tmp_path_factory, tiny_config) -> Scenario:
    """A supervised run; a distillation from one teacher with trained adapters (a hint term) and unlabeled
    slices; an experiment stage, taken up again as ``prokd experiment`` does (:func:`train_stage`: resumed, started
    afresh when killed before its first checkpoint, or, finished, brought in line with its ``last.pt``)."""
    config = tiny_run(tiny_config)
    if request.param == "distillation":
        teachers = [str(request.getfixturevalue("teacher"))]
        config.distill = DistillConfig(teachers=teachers, feature=1.0, feature_term="hint", unlabeled_fraction=0.25)
    straight = tmp_path_factory.mktemp("straight") / "run"
    train_run(phantom_data, straight, config)
    split = load_split(straight / "split.json")

    def start(run: Path, hook: FaultHook) -> None:
        train_run(phantom_data, run, config, split=split, fault_hook=hook)

    def resume(run: Path) -> None:
        if request.param == "stage":
            train_stage(phantom_data, run, config, split)
        else:
            train_run(phantom_data, run, config, resume=True)

    return Scenario(straight, start, resume)


@pytest.mark.parametrize(("point", "epoch"), FAULTS, ids=FAULT_IDS)
def test_a_killed_run_resumes_exactly(scenario, tmp_path, same_runs, point, epoch):
    run = tmp_path / "run"
    run.mkdir()  # made beforehand, so the killed run leaves its folder as a real kill does
    with pytest.raises(Killed):
        scenario.start(run, kill_at(point, epoch))
    for name in LEFT_BEHIND:
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).touch()
    scenario.resume(run)
    assert not [path for path in run.rglob("*") if path.name.endswith(".tmp")]
    same_runs(scenario.straight, run)


def test_a_run_killed_before_its_first_checkpoint_resumes_or_is_overwritten_but_not_rerun(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "split.json", "env.json", "checkpoints/.last.pt.a1b2c3d4.tmp"):
        (run / name).touch()
    assert check_run_dir(run, resume=True) == run
    assert check_run_dir(run, overwrite=True) == run
    with pytest.raises(RunDirError, match="not empty"):
        check_run_dir(run)
    (run / "config.yaml").unlink()
    with pytest.raises(RunDirError, match=r"nothing to resume \(no checkpoints/last.pt; it has no config.yaml\)"):
        check_run_dir(run, resume=True)


def test_only_temporary_files_of_atomic_writes_in_the_run_folder_are_removed(tmp_path):
    run = tmp_path / "run"
    ours = [".metrics.jsonl.a1b2c3d4.tmp", "checkpoints/.best.pt.___x_9y8.tmp"]
    others = ["notes.tmp", ".metrics.jsonl.tmp", "checkpoints/.last.pt.short.tmp", "eval/.summary.json.a1b2c3d4.tmp",
              "checkpoints/.last.pt.a1b2c3d4.tmp.bak"]
    for name in ours + others:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).touch()
    remove_temporaries(run)
    assert sorted(str(path.relative_to(run)) for path in run.rglob("*") if path.is_file()) == sorted(others)
