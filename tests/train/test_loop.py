"""The training loop: Dice rises on the phantom, resume equals an uninterrupted run, schedule, RUN folder."""

from __future__ import annotations

import json
import types

import pytest

from prokd.config import RunConfig
from prokd.experiment.config import UNBOUNDED_EPOCHS
from prokd.losses import SegmentationLoss
from prokd.train import loop
from prokd.models import get_spec
from prokd.runs.checkpoint import load_checkpoint
from prokd.train.loop import learning_rate, warmup_fraction
from prokd.runs.folder import RunDirError
from prokd.train.runner import train_run


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_learning_rate_warmup_then_cosine():
    assert learning_rate(1.0, 0.0, 0.1) == 0.0
    assert learning_rate(1.0, 0.05, 0.1) == pytest.approx(0.5)
    assert learning_rate(1.0, 0.1, 0.1) == pytest.approx(1.0)
    assert learning_rate(1.0, 0.55, 0.1) == pytest.approx(0.01 + 0.99 * 0.5)
    assert learning_rate(1.0, 1.0, 0.1) == pytest.approx(0.01)


def test_warmup_is_a_fraction_of_the_run_and_old_configs_keep_their_epochs():
    assert warmup_fraction(RunConfig().train) == 0.025
    stored = RunConfig.from_dict({"train": {"epochs": 15, "warmup_epochs": 2}})  # a config.yaml of an older version
    assert warmup_fraction(stored.train) == pytest.approx(2 / 15)


def test_minutes_budget_warms_up_like_a_steps_budget(phantom_data, tmp_path, tiny_config, monkeypatch):
    """8 steps either way: 2 epochs of 4 steps, or unbounded epochs and a 7.5 s budget on a clock that advances
    0.9375 s per step; the learning rate must follow the same curve of progress, warm-up included."""
    steady_clock(monkeypatch, seconds_per_step=0.9375)
    schedules = {}
    for budget, train in (("steps", {"epochs": 2}), ("minutes", {"epochs": UNBOUNDED_EPOCHS, "time_budget_minutes": 0.125})):
        seen = schedules[budget] = []

        def recording(base_lr, progress, warmup, seen=seen):
            seen.append((progress, learning_rate(base_lr, progress, warmup)))
            return seen[-1][1]

        monkeypatch.setattr(loop, "learning_rate", recording)
        train_run(phantom_data, tmp_path / budget, tiny_config(steps_per_epoch=4, warmup_fraction=0.25, val_every=9, **train))
    progress, rates = zip(*schedules["minutes"])
    assert progress == pytest.approx([step / 8 for step in range(8)])
    assert rates == pytest.approx([lr for _, lr in schedules["steps"]])
    assert rates[:3] == pytest.approx([0.0, 3e-3 / 2, 3e-3])  # warm-up over the first quarter


def test_minutes_budget_resumes_exactly_on_a_steady_clock(phantom_data, tmp_path, tiny_config, check_resume, monkeypatch):
    """The elapsed training time is stored with the progress, so a resumed minutes-budget run goes on where it
    stopped; only a real clock, whose step times vary, makes two such runs (interrupted or not) differ."""
    steady_clock(monkeypatch, seconds_per_step=1.25)
    config = tiny_config(epochs=UNBOUNDED_EPOCHS, steps_per_epoch=2, time_budget_minutes=0.125, val_every=3)
    check_resume(phantom_data, tmp_path, config, stop_after=2)
    assert [record["step"] for record in read_log(tmp_path / "resumed")] == [2, 4, 6]


def steady_clock(monkeypatch: pytest.MonkeyPatch, seconds_per_step: float) -> None:
    """Make the loop's clock advance ``seconds_per_step`` from one reading to the next: the loop reads it just before
    and just after each step, so every step takes exactly that long."""
    ticks = iter(seconds_per_step * tick for tick in range(100_000))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))


def test_tiny_training_raises_dice_and_writes_run_folder(phantom_data, tmp_path, tiny_config):
    run = tmp_path / "run"
    state = train_run(phantom_data, run, tiny_config(epochs=6, steps_per_epoch=15))
    log = read_log(run)
    assert [r["epoch"] for r in log] == list(range(1, 7))
    assert {"loss", "dice", "lovasz", "lr", "val_dice", "elapsed_seconds"} <= set(log[0])
    unweighted = [r["dice"] + r["lovasz"] + r["ce"] for r in log]  # the total's Lovász weight ramps up over 30 %
    assert unweighted[-1] < unweighted[0]
    assert max(r["val_dice"] for r in log[1:]) > log[0]["val_dice"] + 0.2
    assert state.best_val_dice == max(r["val_dice"] for r in log)
    for name in ("config.yaml", "split.json", "env.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["progress"]["epoch"] == state.best_epoch
    resolved = dict(get_spec("unet-small").default_kwargs)  # the registry's defaults, kept by the checkpoint
    assert best["model"] == {"name": "unet-small", "in_channels": 1, "out_channels": 1, "kwargs": resolved}
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


def test_resume_is_identical_to_uninterrupted_run(phantom_data, tmp_path, tiny_config, check_resume):
    config = tiny_config(epochs=3, steps_per_epoch=4)
    config.augment.enabled = True
    check_resume(phantom_data, tmp_path, config, stop_after=2)


def test_refuses_to_overwrite_existing_run(phantom_data, tmp_path, tiny_config):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("user data")
    with pytest.raises(RunDirError, match=r"exists and is not a prokd run folder \(it holds keep.txt\); choose another --out"):
        train_run(phantom_data, run, tiny_config(epochs=1, steps_per_epoch=1))
    assert (run / "keep.txt").read_text() == "user data"
    with pytest.raises(RunDirError, match="nothing to resume"):
        train_run(phantom_data, tmp_path / "new", tiny_config(), resume=True)


def test_time_budget_stops_training(phantom_data, tmp_path, tiny_config):
    state = train_run(phantom_data, tmp_path / "run", tiny_config(epochs=50, time_budget_minutes=0.05))
    assert state.epoch < 50
    assert state.elapsed_seconds >= 3.0
