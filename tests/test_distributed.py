"""Data-parallel training under torchrun (2 CPU processes, gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from prokd.config import ConfigError, save_config
from prokd.distributed import World, device_of, joined_world, resolve_device
from prokd.runs.checkpoint import load_checkpoint
from prokd.train.runner import train_run

# Float rounding differs between one process and two (gathered sums, averaged gradients); Adam amplifies it a
# little over the steps. Measured: logged terms agree to ~1e-5 relative, weights to ~0.2 % after 18 steps.
TERM_TOLERANCE = 1e-3
WEIGHT_TOLERANCE = 0.01
DICE_TOLERANCE = 0.005


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N -m prokd ARGS`` as a user runs it (one thread per process, as torchrun sets)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--standalone", "-m", "prokd", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def failure(done: subprocess.CompletedProcess) -> str:
    """A failed torchrun's output: the processes' own errors come first, torchrun's summary of them last."""
    return done.stderr if len(done.stderr) < 4000 else f"{done.stderr[:3000]}\n...\n{done.stderr[-1000:]}"


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(single: Path, parallel: Path) -> None:
    """Both runs logged the same epochs and terms (within rounding) and ended with the same weights."""
    one, two = metrics(single), metrics(parallel)
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for name in a.keys() - {"epoch", "step", "lr", "elapsed_seconds", "val_dice"}:
            assert b[name] == pytest.approx(a[name], rel=TERM_TOLERANCE), name
        assert b.get("val_dice", 0) == pytest.approx(a.get("val_dice", 0), abs=DICE_TOLERANCE)
    weights = [load_checkpoint(run / "checkpoints" / "last.pt")["state_dict"] for run in (single, parallel)]
    difference = sum(float(((weights[0][k] - weights[1][k]) ** 2).sum()) for k in weights[0])
    size = sum(float((weights[0][k] ** 2).sum()) for k in weights[0])
    assert (difference / size) ** 0.5 < WEIGHT_TOLERANCE


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory, tiny_config) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "tiny.yaml"
    save_config(tiny_config(epochs=3, steps_per_epoch=4, threads=None), path)
    return path


def test_two_processes_train_like_one_with_the_same_global_batch(phantom_data, tmp_path, tiny_yaml):
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    train_run(phantom_data, single, load_yaml(tiny_yaml))
    done = torchrun("train", "--data", str(phantom_data), "--out", str(parallel), "--config", str(tiny_yaml))
    assert done.returncode == 0, failure(done)
    assert done.stdout.count("trained 3 epochs") == 1  # rank 0 alone reports
    assert json.loads((parallel / "split.json").read_text())["train"] == json.loads(
        (single / "split.json").read_text())["train"]
    assert_same_training(single, parallel)


def test_two_processes_distil_with_trained_adapters_and_gate_like_one(phantom_data, tmp_path, tiny_yaml):
    """Two teachers, learned gate and feature adapters (the objective's own parameters are synchronised too),
    unlabeled slices with pseudo-labels and the consistency term (the labeled / unlabeled split differs between
    the shares)."""
    teacher = tmp_path / "teacher"
    train_run(phantom_data, teacher, load_yaml(tiny_yaml))
    options = ["--teacher", str(teacher), "--teacher", str(teacher), "--aggregate", "learned", "--student",
               "unet-tiny", "--epochs", "2", "--set", "distill.feature=1.0", "--set", "distill.pseudo=1.0",
               "--set", "distill.unlabeled_fraction=0.5", "--set", "distill.consistency=1.0",
               "--set", "distill.consistency_threshold=0.5", "--split", str(teacher / "split.json")]
    for out, run in ((tmp_path / "single", [sys.executable, "-m", "prokd"]), (tmp_path / "parallel", None)):
        args = ["distill", "--data", str(phantom_data), "--out", str(out), "--config", str(tiny_yaml), *options]
        done = subprocess.run([*run, *args], capture_output=True, text=True) if run else torchrun(*args)
        assert done.returncode == 0, failure(done)
    assert {"gate", "feature", "pseudo", "kl", "consistency"} <= metrics(tmp_path / "parallel")[0].keys()
    assert_same_training(tmp_path / "single", tmp_path / "parallel")


def test_two_processes_resume_a_run_interrupted_in_one(phantom_data, tmp_path, tiny_yaml):
    config = load_yaml(tiny_yaml)
    train_run(phantom_data, tmp_path / "single", config)

    def interrupt(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(phantom_data, tmp_path / "resumed", config, on_epoch_end=interrupt)
    done = torchrun("train", "--data", str(phantom_data), "--out", str(tmp_path / "resumed"), "--resume")
    assert done.returncode == 0, failure(done)
    assert_same_training(tmp_path / "single", tmp_path / "resumed")


def test_a_batch_that_does_not_split_over_the_processes_is_refused(phantom_data, tmp_path, tiny_yaml):
    done = torchrun("train", "--data", str(phantom_data), "--out", str(tmp_path / "run"), "--config",
                    str(tiny_yaml), "--set", "train.batch_size=7")
    assert done.returncode != 0
    message = "error: train.batch_size 7 does not split evenly over 2 processes"
    assert [line for line in done.stderr.splitlines() if line.startswith(message)] == [message]  # rank 0 once
    assert f"rank 1: {message}" in done.stderr
    assert not (tmp_path / "run").exists()


def leave_a_world_by_error(rank: int, port: int, left: "torch.multiprocessing.SimpleQueue") -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        with joined_world(torch.device("cpu")) as world:
            world.barrier()
            raise RuntimeError("a failed run")
    except RuntimeError:
        left.put((world.rank, world.size, dist.is_initialized()))


def test_a_joined_process_group_is_destroyed_when_its_run_fails():
    """Destroyed also after an error: a gloo group alive at exit can abort the process (SIGABRT)."""
    left = torch.multiprocessing.get_context("spawn").SimpleQueue()
    torch.multiprocessing.start_processes(leave_a_world_by_error, args=(free_port(), left), nprocs=2,
                                          start_method="spawn")
    assert sorted(left.get() for _ in range(2)) == [(0, 2, False), (1, 2, False)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_single_process_world_keeps_everything():
    world = World()
    tensor = torch.arange(6.0)
    assert world.is_main and world.shard(8) == slice(0, 8)
    assert world.concat(tensor) is tensor and world.gather([1, 2]) == [1, 2]
    assert world.mean({"loss": 0.5}) == {"loss": 0.5} and world.max(3.0) == 3.0


def test_shards_are_contiguous_and_cover_the_batch():
    shards = [World(rank, 4).shard(8) for rank in range(4)]
    assert [list(range(8))[s] for s in shards] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="--device gpu: must be one of auto, cpu, cuda"):
        resolve_device("gpu")
    assert device_of(torch.nn.Identity()) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--device cuda: torch .* sees no CUDA device here"):
        resolve_device("cuda")


def load_yaml(path: Path):
    from prokd.config import load_config

    return load_config(path)
