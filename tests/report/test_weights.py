"""Multi-teacher weights: the run's objective rebuilt with its saved state, weights that sum to 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prokd.config import DistillConfig
from prokd.distill.gate import LearnedAggregator
from prokd.report.folder import Experiment
from prokd.report.overlays import VolumePredictions
from prokd.report.weights import rebuild_objective, teacher_weights
from prokd.runs.checkpoint import CheckpointError, load_checkpoint
from prokd.train.runner import train_run


def test_adaptive_weights_sum_to_one_per_teacher_set(experiment_dir):
    experiment = Experiment.load(experiment_dir)
    row = experiment.first_seed("student-multi")
    runs = experiment.teacher_runs(row)
    assert [r.name for r in runs] == row["teachers"]
    predictions = VolumePredictions(experiment.data)
    cases = [predictions.case(c["case"]) for c in experiment.test_cases(row)]
    weights = teacher_weights(experiment.run_dir(row), runs, cases)
    assert weights.teachers == row["teachers"] and weights.aggregate == "adaptive"
    assert weights.all_pixels.sum() == pytest.approx(1.0, abs=1e-5)
    assert weights.prostate.sum() == pytest.approx(1.0, abs=1e-5)
    assert set(weights.prostate_by_site) == {case.case.site for case in cases}
    for site_weights in weights.prostate_by_site.values():
        assert np.isnan(site_weights).all() or site_weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(weights.all_pixels > 0)


def test_learned_gate_comes_back_from_the_checkpoint(experiment_dir, phantom_data, tiny_config, tmp_path):
    experiment = Experiment.load(experiment_dir)
    teachers = experiment.teacher_runs(experiment.first_seed("student-multi"))
    config = tiny_config(epochs=1, steps_per_epoch=3, threads=1)
    config.model.name = "unet-tiny"
    config.distill = DistillConfig(teachers=[str(t) for t in teachers], aggregate="learned")
    train_run(phantom_data, tmp_path / "learned", config)
    objective, _ = rebuild_objective(tmp_path / "learned", teachers)
    assert isinstance(objective.aggregator, LearnedAggregator)
    saved = load_checkpoint(tmp_path / "learned" / "checkpoints" / "best.pt")["extra"]["objective"]
    last = objective.aggregator.gate[-1].weight
    assert torch.equal(last, saved["aggregator.gate.6.weight"])
    assert last.abs().sum() > 0  # trained away from its zero start


def test_weighted_mode_gives_each_teacher_its_score_share(experiment_dir, phantom_data, tiny_config, tmp_path):
    experiment = Experiment.load(experiment_dir)
    row = experiment.first_seed("student-multi")
    teachers = experiment.teacher_runs(row)
    config = tiny_config(epochs=1, steps_per_epoch=2, threads=1)
    config.model.name = "unet-tiny"
    config.distill = DistillConfig(teachers=[str(t) for t in teachers], aggregate="weighted")
    train_run(phantom_data, tmp_path / "weighted", config)
    scores = np.array([t["score"] for t in json.loads((tmp_path / "weighted" / "teachers.json").read_text())])
    cases = [VolumePredictions(experiment.data).case(c["case"]) for c in experiment.test_cases(row)[:1]]
    weights = teacher_weights(tmp_path / "weighted", teachers, cases)
    np.testing.assert_allclose(weights.all_pixels, scores / scores.sum(), atol=1e-6)


def test_rebuild_needs_a_distillation_run(experiment_dir):
    experiment = Experiment.load(experiment_dir)
    with pytest.raises(CheckpointError, match="not a distillation run"):
        rebuild_objective(experiment.run_dir(experiment.rows[0]), [])
