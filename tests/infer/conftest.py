"""Shared fixtures of the inference tests: a run trained for a few steps on the phantom (one per module)."""

from __future__ import annotations

import pytest

from prokd.train.runner import train_run


@pytest.fixture(scope="module")
def trained_run(phantom_data, tiny_config, tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    train_run(phantom_data, run, tiny_config(epochs=1, steps_per_epoch=3))
    return run
