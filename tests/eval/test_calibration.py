"""Temperature scaling: the fit finds a known temperature, the ECE is what the formula says, and on the phantom a
teacher's temperature fitted on its validation cases lowers its calibration error on test cases it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prokd.eval.calibration import (
    CALIBRATION_FILE,
    calibrate_run,
    fit_temperature,
    gland_logits,
    reliability,
    run_calibration,
)
from prokd.train.runner import train_run


def bernoulli_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds ``z`` and labels drawn with probability ``sigmoid(z)``: calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, n)
    return z, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.uint8)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_the_fit_undoes_a_known_scaling_of_calibrated_logits(scale):
    z, y = bernoulli_sample(200_000, seed=1)
    assert fit_temperature(scale * z, y) == pytest.approx(scale, rel=0.05)


def test_ece_is_the_count_weighted_gap_between_confidence_and_frequency():
    curve = reliability(np.array([0.12, 0.12, 0.9, 0.9, 1.0]), np.array([0, 1, 1, 1, 1]), bins=10)
    assert curve.counts[1] == 2 and curve.counts[9] == 3 and sum(curve.counts) == 5
    assert curve.confidence[1] == pytest.approx(0.12) and curve.frequency[1] == pytest.approx(0.5)
    assert curve.confidence[0] is None and curve.frequency[0] is None
    assert curve.ece == pytest.approx((2 * 0.38 + 3 * abs(2.8 / 3 - 1)) / 5)


def test_calibrated_logits_have_a_small_ece_and_overconfident_ones_a_large_one():
    z, y = bernoulli_sample(100_000, seed=2)
    sigmoid = torch.sigmoid(torch.from_numpy(z)).numpy()
    overconfident = torch.sigmoid(torch.from_numpy(4 * z)).numpy()
    assert reliability(sigmoid, y).ece < 0.01 < 0.05 < reliability(overconfident, y).ece


@pytest.fixture(scope="module")
def teacher(phantom_data, tmp_path_factory, tiny_config):
    run = tmp_path_factory.mktemp("calibration") / "teacher"
    train_run(phantom_data, run, tiny_config(epochs=6, steps_per_epoch=15))
    return run


def test_a_temperature_fitted_on_validation_lowers_the_test_ece_on_the_phantom(phantom_data, teacher):
    calibration = calibrate_run(teacher, phantom_data)
    assert calibration.nll_after <= calibration.nll_before
    assert calibration.after.ece < calibration.before.ece
    test_logits, test_labels, _ = gland_logits(teacher, phantom_data, "test")
    before = reliability(torch.sigmoid(torch.from_numpy(test_logits)).numpy(), test_labels).ece
    after = reliability(torch.sigmoid(torch.from_numpy(test_logits / calibration.temperature)).numpy(), test_labels).ece
    assert after < before


def test_the_stored_temperature_is_reused_until_the_checkpoint_changes(phantom_data, teacher):
    stored = teacher / CALIBRATION_FILE
    calibrate_run(teacher, phantom_data)
    record = json.loads(stored.read_text())
    record["temperature"] = 7.5
    stored.write_text(json.dumps(record))
    assert run_calibration(teacher, phantom_data).temperature == 7.5
    best = teacher / "checkpoints" / "best.pt"
    best.touch()
    assert run_calibration(teacher, phantom_data).temperature != 7.5
    assert json.loads(stored.read_text())["temperature"] != 7.5
