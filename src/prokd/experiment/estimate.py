"""How long the stages of an experiment will take, roughly (``prokd experiment --dry-run``).

A stage trains for its budget: a ``minutes`` budget is its own training time, a ``steps`` budget costs its
optimiser steps times the seconds of one step. Validation (every ``val_every`` epochs) and the test evaluation
come on top: one whole-volume prediction per validation and test case; with ``field_of_view``, one more prediction
of every test volume per shift of the field-of-view protocol. Not included: loading the cases, the efficiency timing, and other work sharing
the machine's cores.

The costs, at the setting of every experiment here (2 threads, batch 8 of 160² slices, augmentation on),
measured on the project's machine (2 cores; idle unless stated). ``kd-step-time`` is that section of BENCHMARKS.md
(batch drawing and augmentation excluded; its "supervised" step runs the student on the 4 labeled slices only):

====================  ===================  ====================================================================
cost                  seconds              where it was measured
====================  ===================  ====================================================================
training step         unet-large 0.43      ``benchmarks/results/promise12_baseline.json``: 4140 steps in its
                                           30-min budget (drawing and augmenting the batch included)
training step         unet-small 0.13      same file: 9081 steps in its 20-min budget
training step         attention-unet 0.82  ``python benchmarks/phantom_demo.py``, seed 0 (its results.json under
                                           ``benchmarks/out/``): 200 steps in 0.68 min on the demo's 80² grid
                                           (0.20 s), × (160 / 80)²
teacher forward       0.22 × the           unet-large: 95 ms, ``kd-step-time`` "KD, KL" 247 ms − "KD, KL,
(uncached teachers)   teacher's step       cached teacher" 152 ms
distillation terms    0.07                 ``kd-step-time`` "KD, KL, cached teacher" 152 ms − "supervised" 79 ms
aggregation           adaptive 0.06,       ``kd-step-time`` 4 cached teachers: adaptive 211 ms, learned 295 ms,
                      learned 0.15         − mean 147 ms
feature term          attention 0.01,      ``kd-step-time`` "KD, KL + <term>" 258 / 288 / 359 ms − "KD, KL"
                      hint 0.04,           247 ms
                      affinity 0.11
volume prediction     unet-large 1.7,      BENCHMARKS.md ``experiment-promise12``, volume latency: one PROMISE12
                      unet-small 0.42      volume on the 160² grid with flip TTA (machine shared)
volume prediction     attention-unet 1.5   3.5 × unet-small: their volume latencies in that run (165 vs 47 ms,
                                           one interleaved pass)
field-of-view shift   1 volume             0.8-1.2 predictions of the unshifted volume for every shift (unet-small,
                      prediction           unet-large; a 256² PROMISE12 volume, 160² grid; machine shared): the
                                           network runs on the model's grid whatever the shift
====================  ===================  ====================================================================

A step's and a prediction's cost is scaled by the batch size and by the area of the grid (``preprocess.size``²).
Checked against ``benchmarks/results/experiment_promise12.json`` (a busier machine: scratch unet-small steps took
0.20 s there): the estimate's ratios to a scratch step, kd-all 2.3 / mkd-site 1.5 / mkd-adaptive 2.0 /
mkd-learned 2.7, against 1.9 / 1.5 / 1.8 / 2.2 measured (means over seeds); and against
``benchmarks/results/phantom_demo.json`` (128² grid, minutes budgets): seconds per step of the unet-large teacher
0.28 estimated / 0.28 measured, of the KD student 0.20 / 0.19, of the cached multi-teacher student 0.17 / 0.17.
Models without a figure get no estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from prokd.config import RunConfig
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE

REFERENCE_BATCH = 8
REFERENCE_SIZE = 160


@dataclass(frozen=True)
class ModelCost:
    """Seconds of one supervised training step and of one whole-volume prediction, at the reference setting."""

    step: float
    volume: float


MODEL_COSTS = {
    "unet-large": ModelCost(step=0.43, volume=1.7),
    "unet-small": ModelCost(step=0.13, volume=0.42),
    "attention-unet": ModelCost(step=0.82, volume=1.5),
}
FORWARD_SHARE = 0.22
"""A teacher's forward pass, as a share of its own training step."""
DISTILL_SECONDS = 0.07
AGGREGATE_SECONDS = {"adaptive": 0.06, "learned": 0.15}
FEATURE_SECONDS = {"attention": 0.01, "hint": 0.04, "affinity": 0.11}


def step_seconds(config: RunConfig, teacher_models: Sequence[str] = ()) -> float | None:
    """Seconds of one optimisation step of ``config`` distilling from teachers of ``teacher_models`` (none for a
    supervised run); None when a model has no measured cost."""
    if any(model not in MODEL_COSTS for model in (config.model.name, *teacher_models)):
        return None
    seconds = MODEL_COSTS[config.model.name].step
    distill = config.distill
    if distill is not None and teacher_models:
        seconds += DISTILL_SECONDS + AGGREGATE_SECONDS.get(distill.aggregate, 0.0)
        if not distill.cache_teachers:
            seconds += sum(FORWARD_SHARE * MODEL_COSTS[model].step for model in teacher_models)
        if distill.feature > 0:
            seconds += FEATURE_SECONDS.get(distill.feature_term, 0.0)
        if distill.consistency > 0:  # the student's forward and backward again, on the unlabeled share of the batch
            seconds += distill.unlabeled_fraction * MODEL_COSTS[config.model.name].step
    return seconds * config.train.batch_size / REFERENCE_BATCH * _area_scale(config)


def stage_seconds(
    config: RunConfig,
    split: dict[str, list[str]],
    teacher_models: Sequence[str] = (),
    ensemble: bool = False,
    retested_models: Sequence[str] = (),
    field_of_view: bool = False,
) -> float | None:
    """Wall-clock seconds of training ``config`` and evaluating it on ``split``'s validation and test cases (with
    ``ensemble``, also its teachers' ensemble on the test cases: every teacher predicts every test volume; and
    each teacher of ``retested_models`` on them; with ``field_of_view``, the model again on every test volume under
    every shift).

    A minutes budget without a measured step cost is its training time alone; a steps budget without one is
    None (unknown).
    """
    train = config.train
    step = step_seconds(config, teacher_models)
    if train.time_budget_minutes is not None:
        training = 60.0 * train.time_budget_minutes
        steps = training / step if step else None
    else:
        steps = train.epochs * train.steps_per_epoch
        training = steps * step if step else None
    if step is None:
        return training
    epochs = min(train.epochs, math.ceil(steps / train.steps_per_epoch))
    predictions = math.ceil(epochs / train.val_every) * len(split["val"]) + len(split["test"])
    predictions += len(split["test"]) * len(FIELD_OF_VIEW_CURVE) if field_of_view else 0
    volumes = predictions * MODEL_COSTS[config.model.name].volume
    evaluated_teachers = [*(teacher_models if ensemble else ()), *retested_models]
    volumes += len(split["test"]) * sum(MODEL_COSTS[model].volume for model in evaluated_teachers)
    return training + volumes * _area_scale(config)


def _area_scale(config: RunConfig) -> float:
    return (config.preprocess.size / REFERENCE_SIZE) ** 2


def format_duration(seconds: float | None) -> str:
    """``"~40 s"``, ``"~12 min"``, ``"~2.5 h"``; ``"?"`` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"
