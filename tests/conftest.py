"""Shared fixtures: a small phantom dataset on disk, the shared PROMISE12 copy (skipped when absent)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from prokd.config import RunConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))

PROMISE12 = Path(os.environ.get("PROKD_PROMISE12", Path(__file__).resolve().parents[2] / "shared" / "data" / "promise12"))


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-site phantom, 3 labeled + 1 unlabeled case per site, as NIfTI + dataset.json."""
    from prokd.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), cases_per_site=3, unlabeled_per_site=1, seed=0)


class DamagedDataset:
    """A copy of a dataset whose labeled images are not volumes (found only when a run reads them);
    :meth:`repair` puts the real images back."""

    def __init__(self, datalist: Path, folder: Path) -> None:
        self.source = datalist.parent
        self.datalist = shutil.copytree(self.source, folder) / datalist.name
        for image in (folder / "imagesTr").iterdir():
            image.write_bytes(b"not a volume")

    def repair(self) -> None:
        shutil.copytree(self.source / "imagesTr", self.datalist.parent / "imagesTr", dirs_exist_ok=True)


@pytest.fixture
def damaged_phantom(phantom_data: Path, tmp_path: Path) -> DamagedDataset:
    """The phantom with unreadable labeled images, in ``tmp_path/damaged``; ``.repair()`` fixes it."""
    return DamagedDataset(phantom_data, tmp_path / "damaged")


@pytest.fixture(scope="session")
def promise12() -> Path:
    """The shared PROMISE12 copy; tests using it skip with the reason when it is absent."""
    if not (PROMISE12 / "dataset.json").is_file():
        pytest.skip(f"PROMISE12 copy not found at {PROMISE12} (set PROKD_PROMISE12 to its folder)")
    return PROMISE12


WALL_CLOCK = "elapsed_seconds"
"""The one field of a checkpoint's progress and of ``metrics.jsonl`` that a resumed run does not reproduce."""


@pytest.fixture(scope="session")
def check_resume():
    """``check_resume(data, folder, config, stop_after)``: train ``config`` straight through into ``folder/straight``
    and, into ``folder/resumed``, stopped after ``stop_after`` epochs then resumed; assert that both end with the same
    checkpoints (model, objective and optimiser state, progress) and ``metrics.jsonl``, wall-clock times aside."""
    return assert_resumes_exactly


def assert_resumes_exactly(data: Path, folder: Path, config: RunConfig, stop_after: int) -> None:
    from prokd.train.runner import train_run

    def interrupt(epoch: int, record: dict) -> None:
        if epoch == stop_after:
            raise KeyboardInterrupt

    train_run(data, folder / "straight", config)
    with pytest.raises(KeyboardInterrupt):
        train_run(data, folder / "resumed", config, on_epoch_end=interrupt)
    assert len(read_metrics(folder / "resumed")) == stop_after
    train_run(data, folder / "resumed", config, resume=True)
    assert_same_runs(folder / "straight", folder / "resumed")


@pytest.fixture(scope="session")
def same_runs():
    """``same_runs(straight, resumed)``: both RUN folders end with the same checkpoints (model, objective and
    optimiser state, progress, epoch log) and ``metrics.jsonl``, wall-clock times aside."""
    return assert_same_runs


def assert_same_runs(straight: Path, resumed: Path) -> None:
    from prokd.runs.checkpoint import load_checkpoint

    for name in ("last.pt", "best.pt"):
        expected, actual = (load_checkpoint(run / "checkpoints" / name) for run in (straight, resumed))
        for part in ("state_dict", "extra", "optimizer", "progress", "log"):
            assert_same(expected[part], actual[part], f"{name}:{part}")
    assert read_metrics(resumed) == read_metrics(straight)


def read_metrics(run_dir: Path) -> list[dict]:
    """``metrics.jsonl`` without its wall-clock field."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != WALL_CLOCK} for line in lines]


def assert_same(expected: object, actual: object, where: str) -> None:
    """Nested containers of tensors and numbers, equal bit for bit (the wall-clock field aside)."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(expected, actual), where
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys(), where
        for key in expected:
            if key != WALL_CLOCK:
                assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), where
        for i, (a, b) in enumerate(zip(expected, actual)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert expected == actual, where


@pytest.fixture(scope="session")
def tiny_config():
    """Factory of runs small enough for a unit test: unet-small at 64², a few short epochs, no augmentation."""
    return make_tiny_config


def make_tiny_config(**train: object) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"name": "unet-small"},
            "preprocess": {"size": 64, "target_spacing": 2.0},
            "augment": {"enabled": False},
            "split": {"val_fraction": 0.2, "test_fraction": 0.2},
            "train": {"epochs": 3, "steps_per_epoch": 10, "batch_size": 8, "lr": 3e-3, "threads": 2, **train},
        }
    )


@pytest.fixture(scope="session")
def reoriented():
    """Factory: ``reoriented(source, target)`` writes the volume ``source`` to ``target`` (NIfTI or an ITK format)
    with its axes permuted and one flipped, by SimpleITK's own filters, which keep every voxel at its place in
    space: the same scan, stored another way."""
    return write_reoriented


def write_reoriented(source: Path, target: Path) -> Path:
    import SimpleITK as sitk

    image = sitk.PermuteAxes(sitk.ReadImage(str(source)), (2, 0, 1))
    sitk.WriteImage(sitk.Flip(image, (True, False, False)), str(target))
    return target


@pytest.fixture(scope="session")
def assert_readable():
    """``assert_readable(text, names=(), width=80)``: printed ``text`` has no cut cell (rich's ``…``), no line wider
    than ``width``, and every one of ``names`` whole (as one word)."""
    return check_readable


def check_readable(text: str, names: Iterable[str] = (), width: int = 80) -> None:
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    words = text.split()
    assert [name for name in names if name not in words] == []
