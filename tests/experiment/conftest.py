"""A tiny experiment YAML (64² grid, 20-step stages) for the experiment tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_EXPERIMENT: dict[str, Any] = {
    "name": "tiny",
    "split": {"mode": "holdout", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
    "run": {
        "preprocess": {"size": 64, "target_spacing": 2.0},
        "augment": {"enabled": False},
        "train": {"steps_per_epoch": 10, "batch_size": 8, "lr": 3e-3},
    },
    "seeds": [0],
    "threads": 1,
    "efficiency": {"threads": 1, "repeats": 2},
    "teachers": [
        {"name": "full", "model": "unet-small", "steps": 20},
        {"name": "site", "model": "unet-tiny", "steps": 20, "by": "cases:2"},
    ],
    "students": [
        {"name": "scratch", "model": "unet-tiny", "steps": 20, "seeds": [0, 1]},
        {"name": "kd", "model": "unet-tiny", "steps": 20, "teachers": ["full", "site"],
         "distill": {"aggregate": "adaptive", "kl": 1.0}},
    ],
}


@pytest.fixture(scope="session")
def write_experiment():
    """``write_experiment(path, data, **changes)``: the tiny experiment on ``data`` with top-level keys replaced,
    written to ``path``; returns the path."""

    def write(path: Path, data: Path, **changes: Any) -> Path:
        config = {**copy.deepcopy(TINY_EXPERIMENT), "data": str(data), **changes}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write
