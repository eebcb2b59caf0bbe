"""The `prokd demo` pipeline on the built-in phantom, timed end to end.

    python benchmarks/phantom_demo.py

Writes ``benchmarks/results/phantom_demo.json`` and the ``phantom-demo`` section of ``BENCHMARKS.md``:
wall time of the whole demo, and per model its test-split 3D Dice / HD95 (mm), parameters and latency.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from common import ROOT, efficiency, update_section, write_results

from prokd.demo import DEMO_MODELS, demo_config, run_demo

RESULTS = ROOT / "benchmarks" / "results" / "phantom_demo.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "phantom_demo")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    evaluations = run_demo(args.out)
    minutes = (time.perf_counter() - started) / 60
    models = {}
    for entry in DEMO_MODELS:
        evaluation = evaluations[entry.role]
        models[entry.role] = {
            "model": entry.name,
            "budget_minutes": entry.minutes,
            "summary": evaluation.summary,
            "cases": evaluation.rows,
            **efficiency(args.out / entry.role, size=128),
        }
    results = {"command": "python benchmarks/phantom_demo.py", "wall_minutes": round(minutes, 2), "models": models,
               "config": demo_config(DEMO_MODELS[0].name, DEMO_MODELS[0].minutes).to_dict()}
    write_results(RESULTS, results, seed=0)
    lines = [
        "## Phantom demo (`prokd demo`)",
        "",
        f"Command: `{results['command']}` (runs `prokd demo`); whole demo {minutes:.1f} min wall time on this machine. "
        "Phantom test split (6 cases, 4 sites), 3D metrics, seed 0; latency: median of 30 passes of 1×1×128², 2 threads.",
        "",
        "| role | model | params | latency | train budget | test Dice | HD95 (mm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, run in models.items():
        overall = run["summary"]["overall"]
        lines.append(
            f"| {role} | `{run['model']}` | {run['params'] / 1e6:.2f} M | {run['latency_ms']:.1f} ms | "
            f"{run['budget_minutes']} min | {overall['dice']['mean']:.3f} ± {overall['dice']['sd']:.3f} | "
            f"{overall['hd95']['mean']:.1f} |"
        )
    update_section("phantom-demo", "\n".join(lines))


if __name__ == "__main__":
    main()
