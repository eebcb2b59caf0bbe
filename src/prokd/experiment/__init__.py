"""Experiments: teachers vs students from scratch vs single- and multi-teacher KD on one dataset, over seeds.

``config`` (the experiment YAML, validated up front) → ``plan`` (stages in run order) → ``runner`` (train,
resume or reuse each stage via ``stages``; evaluation, then every model timed in one pass) → ``results`` (rows,
groups, comparisons, the verdict; JSON, CSV, Markdown).
"""

from prokd.experiment.config import ExperimentConfig, load_experiment
from prokd.experiment.plan import Stage, make_plan
from prokd.experiment.results import collect_results, verdict_lines, write_results
from prokd.experiment.runner import run_experiment

__all__ = [
    "ExperimentConfig",
    "Stage",
    "collect_results",
    "load_experiment",
    "make_plan",
    "run_experiment",
    "verdict_lines",
    "write_results",
]
