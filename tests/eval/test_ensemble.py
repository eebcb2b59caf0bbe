"""The teachers' ensemble at test time: the mean of the members' probabilities, scored like one run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prokd.data.datalist import load_case, load_cases
from prokd.eval.ensemble import Ensemble, evaluate_ensemble
from prokd.eval.evaluate import evaluate_run
from prokd.infer.postprocess import probability_to_mask
from prokd.infer.predict import Predictor
from prokd.train.runner import train_run


@pytest.fixture(scope="module")
def two_runs(phantom_data, tmp_path_factory, tiny_config):
    """Two briefly trained runs of different networks and seeds on the same split."""
    folder = tmp_path_factory.mktemp("ensemble")
    train_run(phantom_data, folder / "a", tiny_config(epochs=1, steps_per_epoch=4))
    other = tiny_config(epochs=1, steps_per_epoch=4, seed=1)
    other.model.name = "unet-tiny"
    train_run(phantom_data, folder / "b", other, split=json.loads((folder / "a" / "split.json").read_text()))
    return folder / "a", folder / "b"


def test_the_ensemble_averages_the_members_probabilities(phantom_data, two_runs):
    members = [Predictor.from_checkpoint(run) for run in two_runs]
    loaded = load_case(load_cases(phantom_data).labeled[0])
    spacing = loaded.geometry.spacing
    prediction = Ensemble(members).predict(loaded.image, spacing)
    own = [member.predict(loaded.image, spacing).probability for member in members]
    assert not np.allclose(own[0], own[1])
    assert prediction.probability.shape == loaded.image.shape and prediction.probability.dtype == np.float32
    np.testing.assert_allclose(prediction.probability, (own[0] + own[1]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(prediction.mask, probability_to_mask(prediction.probability, members[0].postprocess))
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


def test_an_ensemble_of_one_run_twice_scores_as_that_run(phantom_data, two_runs):
    run = two_runs[0]
    test_cases = json.loads((run / "split.json").read_text())["test"]
    alone = evaluate_run(run, phantom_data, split="test", write=False)
    twice = evaluate_ensemble([run, run], phantom_data, test_cases)
    assert [row["case"] for row in twice.rows] == test_cases
    assert [row["dice"] for row in twice.rows] == pytest.approx([row["dice"] for row in alone.rows])
    assert twice.summary["overall"]["dice"] == pytest.approx(alone.summary["overall"]["dice"])
