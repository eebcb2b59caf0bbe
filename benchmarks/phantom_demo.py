"""`prokd demo` on the built-in phantom, timed end to end.

    python benchmarks/phantom_demo.py

Writes ``benchmarks/results/phantom_demo.json`` (the demo experiment's results, wall time, command) and the
``phantom-demo`` section of ``BENCHMARKS.md``: the wall time of the whole demo and the experiment's tables.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import ROOT, experiment_markdown, update_section

from prokd.demo import run_demo
from prokd.train.run_folder import write_json

COMMAND = "python benchmarks/phantom_demo.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "phantom_demo")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    results = run_demo(args.out)
    minutes = (time.perf_counter() - started) / 60
    write_json(ROOT / "benchmarks" / "results" / "phantom_demo.json",
               {"command": COMMAND, "wall_minutes": round(minutes, 2), **results})
    note = (f"The whole demo (phantom, 8 trainings with minute budgets, evaluation, report) took {minutes:.1f} min "
            "of wall time; budgets are wall-clock, so a slower machine trains fewer steps.")
    update_section("phantom-demo", experiment_markdown(results, "Phantom demo (`prokd demo`)", COMMAND, note))


if __name__ == "__main__":
    main()
