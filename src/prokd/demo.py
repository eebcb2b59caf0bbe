"""``prokd demo``: the distillation experiment on the built-in phantom, offline, in about 5 minutes on 2 CPU cores.

phantom (4 sites, 6 labelled + 1 unlabelled cases each) → the experiment of ``prokd/demo.yaml`` (full teacher,
one limit-trained teacher per site, ``unet-small`` from scratch, distilled from the full teacher, distilled from
the site teachers with 4 labelled cases) → results table → report::

    DIR/phantom/       NIfTI volumes + dataset.json
    DIR/experiment/    the experiment folder (docs/architecture.md): runs/, results/results.md, report/index.html
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from prokd.data.phantom import write_phantom
from prokd.experiment.config import ExperimentConfig, parse_experiment
from prokd.experiment.runner import run_experiment
from prokd.report.page import write_report
from prokd.train.run_folder import RunDirError

DEMO_EXPERIMENT = Path(__file__).with_name("demo.yaml")


def demo_experiment(data: Path, minutes_scale: float = 1.0) -> ExperimentConfig:
    """The demo experiment on the dataset ``data``, every stage's ``minutes`` budget multiplied by ``minutes_scale``."""
    raw = yaml.safe_load(DEMO_EXPERIMENT.read_text())
    raw["data"] = str(data)
    for entry in [*raw["teachers"], *raw["students"]]:
        entry["minutes"] *= minutes_scale
    return parse_experiment(raw, DEMO_EXPERIMENT)


def run_demo(
    out: str | Path, overwrite: bool = False, minutes_scale: float = 1.0, console: Console | None = None
) -> dict[str, Any]:
    """Write the phantom into ``out/phantom``, run the demo experiment into ``out/experiment`` and its report.

    Args:
        overwrite: delete a non-empty ``out`` first (otherwise it is refused).
        minutes_scale: multiplies every training budget (tests shrink the demo with it).

    Returns:
        the experiment's results (:func:`~prokd.experiment.results.collect_results`).

    Raises:
        RunDirError: ``out`` is not empty and ``overwrite`` is off.
    """
    out = Path(out)
    console = console or Console()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"{out}: folder exists and is not empty (use --overwrite)")
        shutil.rmtree(out)
    data = write_phantom(out / "phantom", cases_per_site=6, unlabeled_per_site=1, seed=0)
    console.print(f"phantom written: {data}")
    experiment = out / "experiment"
    results = run_experiment(demo_experiment(data, minutes_scale), experiment, console=console)
    console.print(f"results: {experiment / 'results' / 'results.md'}", highlight=False, soft_wrap=True)
    console.print(f"report:  {write_report(experiment)}", highlight=False, soft_wrap=True)
    return results
