"""Stage time estimates: measured step costs scaled by batch and grid, distillation on top, budgets and evaluation."""

from __future__ import annotations

import pytest

from prokd.config import RunConfig
from prokd.experiment.estimate import MODEL_COSTS, format_duration, stage_seconds, step_seconds

SPLIT = {"train": ["a", "b", "c"], "val": ["d", "e"], "test": ["f", "g", "h"]}


def run(model: str = "unet-small", **sections) -> RunConfig:
    return RunConfig.from_dict({"model": {"name": model}, **sections})


def distilled(**distill) -> RunConfig:
    return run(distill={"teachers": ["t"], **distill})


def test_a_supervised_step_scales_with_batch_and_grid_area():
    assert step_seconds(run("unet-large")) == pytest.approx(MODEL_COSTS["unet-large"].step)
    half = run("unet-large", train={"batch_size": 16}, preprocess={"size": 80})
    assert step_seconds(half) == pytest.approx(MODEL_COSTS["unet-large"].step * 2 * 0.25)


def test_distillation_costs_more_and_cached_teachers_cost_less():
    scratch = step_seconds(run())
    uncached = step_seconds(distilled(), ["unet-large"])
    cached = step_seconds(distilled(cache_teachers=True), ["unet-large"])
    four_uncached = step_seconds(distilled(), ["unet-large"] * 4)
    assert scratch < cached < uncached < four_uncached
    assert 1.5 < uncached / scratch < 4  # "KD steps 2-4x a supervised step unless teacher logits are cached"
    assert cached == step_seconds(distilled(cache_teachers=True), ["unet-large"] * 4)
    assert step_seconds(distilled(feature=1.0, feature_term="affinity"), ["unet-large"]) > uncached
    assert step_seconds(distilled(cache_teachers=True, aggregate="learned"), ["unet-large"]) > cached


def test_unmeasured_models_have_no_step_cost():
    assert step_seconds(run("segresnet")) is None
    assert step_seconds(distilled(), ["segresnet"]) is None


def test_a_steps_budget_costs_its_steps_plus_validation_and_test_predictions():
    config = run("unet-large", train={"epochs": 4, "steps_per_epoch": 25, "val_every": 2})
    predictions = 2 * len(SPLIT["val"]) + len(SPLIT["test"])
    expected = 100 * MODEL_COSTS["unet-large"].step + predictions * MODEL_COSTS["unet-large"].volume
    assert stage_seconds(config, SPLIT) == pytest.approx(expected)
    assert stage_seconds(run("segresnet", train={"epochs": 4}), SPLIT) is None


def test_the_teachers_ensemble_and_each_retested_teacher_add_their_predictions_of_every_test_volume():
    config = distilled(cache_teachers=True)
    teachers = ["unet-large"] * 3
    alone = stage_seconds(config, SPLIT, teachers)
    with_ensemble = stage_seconds(config, SPLIT, teachers, ensemble=True)
    assert with_ensemble - alone == pytest.approx(len(SPLIT["test"]) * 3 * MODEL_COSTS["unet-large"].volume)
    retested = stage_seconds(config, SPLIT, teachers, ensemble=True, retested_models=teachers[:2])
    assert retested - with_ensemble == pytest.approx(len(SPLIT["test"]) * 2 * MODEL_COSTS["unet-large"].volume)


def test_a_minutes_budget_is_its_own_training_time():
    config = run(train={"epochs": 1_000_000, "time_budget_minutes": 10.0, "val_every": 1, "steps_per_epoch": 100})
    seconds = stage_seconds(config, SPLIT)
    epochs = -(-600 / MODEL_COSTS["unet-small"].step // 100)
    assert seconds == pytest.approx(600 + (epochs * 2 + 3) * MODEL_COSTS["unet-small"].volume)
    assert stage_seconds(run("segresnet", train={"time_budget_minutes": 10.0}), SPLIT) == 600


@pytest.mark.parametrize("seconds, text", [(None, "?"), (42.4, "~42 s"), (600, "~10 min"), (9000, "~2.5 h")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_the_consistency_term_adds_a_student_step_on_the_unlabeled_share():
    plain = step_seconds(distilled(cache_teachers=True, unlabeled_fraction=0.5), ["unet-large"])
    consistent = step_seconds(distilled(cache_teachers=True, unlabeled_fraction=0.5, consistency=1.0), ["unet-large"])
    assert consistent - plain == pytest.approx(0.5 * MODEL_COSTS["unet-small"].step)


def test_the_field_of_view_protocol_adds_a_prediction_of_every_test_volume_per_shift():
    config = run("unet-large")
    extra = stage_seconds(config, SPLIT, field_of_view=True) - stage_seconds(config, SPLIT)
    shifts = 6  # original, crop 0.6x, pad 1.5x and 2x, resampled to 0.5x and 2x: the network runs on its own grid
    assert extra == pytest.approx(len(SPLIT["test"]) * shifts * MODEL_COSTS["unet-large"].volume)
    smaller = run("unet-large", preprocess={"size": 80})
    assert stage_seconds(smaller, SPLIT, field_of_view=True) - stage_seconds(smaller, SPLIT) == pytest.approx(extra / 4)
