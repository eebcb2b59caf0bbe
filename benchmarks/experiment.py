"""Run an experiment config (``prokd experiment``) and publish its results in ``BENCHMARKS.md``.

    python benchmarks/experiment.py configs/promise12.yaml
    python benchmarks/experiment.py configs/experiment_phantom.yaml

The experiment folder is ``benchmarks/out/<config name>`` (finished stages are reused and an interrupted one
resumed, so the command can be repeated until it is done); its report is written there too. Results:
``benchmarks/results/experiment_<config name>.json`` (the experiment's ``results.json`` with the command) and the
``experiment-<config name>`` section of ``BENCHMARKS.md``, generated from the experiment's own tables.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from common import ROOT, experiment_markdown, update_section
from rich.console import Console

from prokd.experiment import load_experiment, run_experiment
from prokd.runs.folder import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="experiment YAML")
    parser.add_argument("--out", type=Path, help="experiment folder (default: benchmarks/out/<config name>)")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="write the HTML report")
    args = parser.parse_args()
    config = load_experiment(args.config)
    out = args.out or ROOT / "benchmarks" / "out" / args.config.stem
    console = Console()
    results = run_experiment(config, out, console=console)
    command = shlex.join(["python", "benchmarks/experiment.py", *sys.argv[1:]])
    write_json(ROOT / "benchmarks" / "results" / f"experiment_{args.config.stem}.json", {"command": command, **results})
    title = f"Experiment `{config.name}` (`{args.config.name}`)"
    update_section(f"experiment-{args.config.stem}", experiment_markdown(results, title, command))
    if args.report:
        from prokd.report.page import write_report

        console.print(f"report: {write_report(out)}")


if __name__ == "__main__":
    main()
