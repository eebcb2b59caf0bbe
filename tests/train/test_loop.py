"""The training loop: Dice rises on the phantom, resume equals an uninterrupted run, schedule, RUN folder."""

from __future__ import annotations

import json

import pytest
import torch

from prokd.losses import SegmentationLoss
from prokd.train.checkpoint import load_checkpoint
from prokd.train.loop import learning_rate
from prokd.train.run_folder import RunDirError
from prokd.train.runner import train_run


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_learning_rate_warmup_then_cosine():
    assert learning_rate(1.0, 0.0, 0.1) == 0.0
    assert learning_rate(1.0, 0.05, 0.1) == pytest.approx(0.5)
    assert learning_rate(1.0, 0.1, 0.1) == pytest.approx(1.0)
    assert learning_rate(1.0, 0.55, 0.1) == pytest.approx(0.01 + 0.99 * 0.5)
    assert learning_rate(1.0, 1.0, 0.1) == pytest.approx(0.01)


def test_tiny_training_raises_dice_and_writes_run_folder(phantom_data, tmp_path, tiny_config):
    run = tmp_path / "run"
    state = train_run(phantom_data, run, tiny_config(epochs=6, steps_per_epoch=15))
    log = read_log(run)
    assert [r["epoch"] for r in log] == list(range(1, 7))
    assert {"loss", "dice", "lovasz", "lr", "val_dice", "elapsed_seconds"} <= set(log[0])
    assert log[-1]["loss"] < log[0]["loss"]
    assert max(r["val_dice"] for r in log[1:]) > log[0]["val_dice"] + 0.2
    assert state.best_val_dice == max(r["val_dice"] for r in log)
    for name in ("config.yaml", "split.json", "env.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["progress"]["epoch"] == state.best_epoch
    assert best["model"] == {"name": "unet-small", "in_channels": 1, "out_channels": 1, "kwargs": {}}
    assert best["preprocess"]["size"] == 64
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])


def test_loop_reports_progress_to_the_lovasz_warmup(phantom_data, tmp_path, tiny_config, monkeypatch):
    reported = []
    monkeypatch.setattr(SegmentationLoss, "set_progress", lambda self, progress: reported.append(progress))
    config = tiny_config(epochs=2, steps_per_epoch=3)
    config.loss.lovasz_warmup = 0.5
    train_run(phantom_data, tmp_path / "run", config)
    assert reported == pytest.approx([step / 6 for step in range(6)])


def test_resume_is_identical_to_uninterrupted_run(phantom_data, tmp_path, tiny_config):
    config = tiny_config(epochs=3, steps_per_epoch=4)
    config.augment.enabled = True
    train_run(phantom_data, tmp_path / "straight", config)

    def interrupt(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(phantom_data, tmp_path / "resumed", config, on_epoch_end=interrupt)
    train_run(phantom_data, tmp_path / "resumed", config, resume=True)

    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["state_dict"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["state_dict"]
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name
    assert [r["epoch"] for r in read_log(tmp_path / "resumed")] == [1, 2, 3]
    assert [r["loss"] for r in read_log(tmp_path / "resumed")] == [r["loss"] for r in read_log(tmp_path / "straight")]


def test_refuses_to_overwrite_existing_run(phantom_data, tmp_path, tiny_config):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("user data")
    with pytest.raises(RunDirError, match="not empty"):
        train_run(phantom_data, run, tiny_config(epochs=1, steps_per_epoch=1))
    assert (run / "keep.txt").read_text() == "user data"
    with pytest.raises(RunDirError, match="nothing to resume"):
        train_run(phantom_data, tmp_path / "new", tiny_config(), resume=True)


def test_time_budget_stops_training(phantom_data, tmp_path, tiny_config):
    state = train_run(phantom_data, tmp_path / "run", tiny_config(epochs=50, time_budget_minutes=0.05))
    assert state.epoch < 50
    assert state.elapsed_seconds >= 3.0
