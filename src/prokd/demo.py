"""``prokd demo``: the distillation experiment on the built-in phantom, offline, in about 5 minutes on 2 CPU cores.

phantom (4 sites, 10 labeled + 2 unlabeled cases each) → the experiment of ``prokd/demo.yaml`` (a teacher on all
training cases and two limit-trained teachers on 7 cases each; ``unet-small`` students from scratch and distilled,
with all labels and with 4) → results table → report → verdict, all with budgets in optimiser steps::

    DIR/phantom/       NIfTI volumes + dataset.json
    DIR/experiment/    the experiment folder (docs/architecture.md): runs/, results/results.md, report/index.html
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from prokd.config import ConfigError
from prokd.data.phantom import write_phantom
from prokd.experiment.config import ExperimentConfig, parse_experiment
from prokd.experiment.results import verdict_lines
from prokd.experiment.runner import run_experiment
from prokd.report.page import write_report
from prokd.runs.folder import FolderKind, prepare_run_dir

DEMO_EXPERIMENT = Path(__file__).with_name("demo.yaml")
DEMO_FOLDER = FolderKind("prokd demo folder", markers=("phantom/dataset.json",), optional=("experiment",))
"""A demo folder: ``phantom/`` with its ``dataset.json`` and, once the experiment started, ``experiment/``."""
STEPS_SCALE_VARIABLE = "PROKD_DEMO_STEPS_SCALE"
"""Environment variable scaling every step budget of ``prokd demo`` (CI runs the README's command with a tiny one)."""


def demo_experiment(data: Path, seed: int = 0, steps_scale: float = 1.0) -> ExperimentConfig:
    """The demo experiment on the dataset ``data``: split and training seeded by ``seed``, every stage's ``steps``
    multiplied by ``steps_scale`` (at least one step)."""
    raw = yaml.safe_load(DEMO_EXPERIMENT.read_text())
    raw["data"] = str(Path(data).absolute())
    raw["seeds"] = [seed]
    raw["split"]["seed"] = seed
    entries = [*raw["teachers"], *raw["students"]]
    for entry in entries:
        entry["steps"] = max(1, round(entry["steps"] * steps_scale))
    train = raw["run"]["train"]  # a budget is whole epochs: shrink the epoch with the budget
    train["steps_per_epoch"] = min(train["steps_per_epoch"], *(entry["steps"] for entry in entries))
    return parse_experiment(raw, DEMO_EXPERIMENT)


def steps_scale_from_environment() -> float:
    """``PROKD_DEMO_STEPS_SCALE`` as a positive number (1 when unset).

    Raises:
        ConfigError: the variable is set to anything but a positive number.
    """
    text = os.environ.get(STEPS_SCALE_VARIABLE, "1")
    try:
        scale = float(text)
    except ValueError:
        scale = float("nan")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{STEPS_SCALE_VARIABLE}={text!r}: must be a positive number")
    return scale


def run_demo(
    out: str | Path,
    overwrite: bool = False,
    seed: int = 0,
    steps_scale: float = 1.0,
    console: Console | None = None,
) -> dict[str, Any]:
    """Write the phantom into ``out/phantom``, run the demo experiment into ``out/experiment`` and its report, and
    end with the verdict (:func:`~prokd.experiment.results.verdict_lines`).

    Args:
        overwrite: replace ``out`` when it holds an earlier demo (otherwise a non-empty ``out`` is refused).
        seed: seeds the phantom's anatomy and noise, the split and every training run.
        steps_scale: multiplies every training budget (tests and CI shrink the demo with it).

    Returns:
        the experiment's results (:func:`~prokd.experiment.results.collect_results`).

    Raises:
        RunDirError: ``out`` is not empty and ``overwrite`` is off, or it holds something other than a demo.
    """
    out = Path(os.path.abspath(out))
    console = console or Console()
    prepare_run_dir(out, overwrite=overwrite, kind=DEMO_FOLDER)  # an earlier demo only, nothing else
    if steps_scale != 1.0:
        console.print(f"training budgets scaled by {steps_scale:g} ({STEPS_SCALE_VARIABLE}): a smoke run, not a result")
    data = write_phantom(out / "phantom", cases_per_site=10, unlabeled_per_site=2, seed=seed)
    console.print(f"phantom written: {data}", highlight=False, soft_wrap=True)
    experiment = out / "experiment"
    results = run_experiment(demo_experiment(data, seed, steps_scale), experiment, console=console)
    console.print(f"results: {experiment / 'results' / 'results.md'}", highlight=False, soft_wrap=True)
    console.print(f"report:  {write_report(experiment)}", highlight=False, soft_wrap=True)
    for line in verdict_lines(results):
        console.print(line, highlight=False, soft_wrap=True)
    return results

