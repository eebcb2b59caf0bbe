"""Distillation from several teachers: aggregating their soft targets into one.

Importing this package registers every aggregation mode (``mean``, ``weighted``, ``site``, ``trust``,
``adaptive`` from :mod:`prokd.distill.aggregate`, ``entropy``, ``confidence-max``, ``agreement`` from
:mod:`prokd.distill.confidence`, ``learned`` from :mod:`prokd.distill.gate`); build one with
:func:`build_aggregator`, or for given teachers with :func:`build_aggregator_for` after measuring on them what
:func:`teacher_measurements` names.
"""

from __future__ import annotations

from prokd.distill.aggregate import (
    AdaptiveAggregator,
    AggregateResult,
    Aggregator,
    MeanAggregator,
    WeightedAggregator,
    aggregators,
    build_aggregator,
    build_aggregator_for,
    normalised_entropy,
    register_aggregator,
    teacher_measurements,
)
from prokd.distill.confidence import AgreementAggregator, ConfidenceMaxAggregator, EntropyAggregator
from prokd.distill.gate import LearnedAggregator, gate_loss

__all__ = [
    "AdaptiveAggregator",
    "AggregateResult",
    "Aggregator",
    "AgreementAggregator",
    "ConfidenceMaxAggregator",
    "EntropyAggregator",
    "LearnedAggregator",
    "MeanAggregator",
    "WeightedAggregator",
    "aggregators",
    "build_aggregator",
    "build_aggregator_for",
    "gate_loss",
    "normalised_entropy",
    "register_aggregator",
    "teacher_measurements",
]
