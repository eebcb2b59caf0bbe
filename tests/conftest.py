"""Shared fixtures: a small phantom dataset on disk, the shared PROMISE12 copy (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from prokd.config import RunConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))

PROMISE12 = Path(os.environ.get("PROKD_PROMISE12", Path(__file__).resolve().parents[2] / "shared" / "data" / "promise12"))


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-site phantom, 3 labelled + 1 unlabelled case per site, as NIfTI + dataset.json."""
    from prokd.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), cases_per_site=3, unlabeled_per_site=1, seed=0)


@pytest.fixture(scope="session")
def promise12() -> Path:
    """The shared PROMISE12 copy; tests using it skip with the reason when it is absent."""
    if not (PROMISE12 / "dataset.json").is_file():
        pytest.skip(f"PROMISE12 copy not found at {PROMISE12} (set PROKD_PROMISE12 to its folder)")
    return PROMISE12


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
