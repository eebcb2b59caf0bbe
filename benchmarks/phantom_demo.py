"""`prokd demo` on the built-in phantom for several seeds, timed end to end, with the directions it must show.

    python benchmarks/phantom_demo.py [--seeds 0 1 2]

Each seed is one whole demo (phantom, split and training all seeded by it), run in this process one after
another. Writes ``benchmarks/results/phantom_demo.json`` (every seed's results, verdict, wall time and checks)
and the ``phantom-demo`` section of ``BENCHMARKS.md``. The checks are the ones the demo exists to show, on its
phantom test cases (3D Dice, mean over the test cases):

* the teacher above the student from scratch;
* the KD student at or above the student from scratch: its mean Dice is not lower, or the difference is within the
  case spread (a tie: the 95 % interval of the paired per-case differences holds 0);
* the multi-teacher student with 4 labels clearly above the student from scratch with the same 4 labels: higher,
  and beyond the case spread (the paired 95 % interval lies above 0);
* the best student at least ``BEST_STUDENT_DICE``;
* the whole demo within ``MAX_MINUTES`` of wall time.

The case spread is the one the demo's own verdict reports (:func:`prokd.experiment.results.judge_difference`): with
one seed per model, the paired differences over the demo's test cases.

Exit code 1 when a check fails for any seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, update_section

from prokd.demo import run_demo
from prokd.experiment.results import signed_points, verdict_lines
from prokd.runs.folder import environment_info, write_json

COMMAND = "python benchmarks/phantom_demo.py"
BEST_STUDENT_DICE = 0.85
MAX_MINUTES = 5.0


def at_or_above(comparison: dict[str, Any]) -> bool:
    """Not lower than its baseline, or within the case spread of it (a tie)."""
    return comparison["change_points"] >= 0 or comparison["beyond_spread"] is False


def clearly_above(comparison: dict[str, Any]) -> bool:
    """Higher than its baseline, beyond the case spread."""
    return comparison["change_points"] > 0 and comparison["beyond_spread"] is True


Check = tuple[str, Callable[[dict[str, Any], float], bool]]
CHECKS: tuple[Check, ...] = (
    ("teacher > scratch", lambda run, _: run["dice"]["teacher-full"] > run["dice"]["student-scratch"]),
    ("KD at or above scratch", lambda run, _: at_or_above(run["comparisons"]["student-kd"])),
    ("multi-teacher (4 labels) clearly above scratch (4 labels)",
     lambda run, _: clearly_above(run["comparisons"]["student-mkd-4"])),
    (f"best student >= {BEST_STUDENT_DICE}",
     lambda run, _: max(student_dice(run["dice"]).values()) >= BEST_STUDENT_DICE),
    (f"wall time <= {MAX_MINUTES:g} min", lambda _, minutes: minutes <= MAX_MINUTES),
)  # fmt: skip
COLUMNS = ("teacher-full", "student-scratch", "student-kd", "student-scratch-4", "student-mkd-4")
COMPARED = ("student-kd", "student-mkd-4")


def student_dice(dice: dict[str, float]) -> dict[str, float]:
    return {group: value for group, value in dice.items() if group.startswith("student-")}


def group_dice(results: dict[str, Any]) -> dict[str, float]:
    """Mean test Dice of every group of one demo."""
    return {group["group"]: group["overall"]["dice"]["mean"] for group in results["groups"]}


def run_seed(seed: int, out: Path) -> dict[str, Any]:
    """One whole demo into ``out``, timed; its groups' Dice, verdict and checks."""
    started = time.perf_counter()
    results = run_demo(out, overwrite=True, seed=seed)  # replaces an earlier demo there, and nothing else
    minutes = (time.perf_counter() - started) / 60
    run = {"dice": group_dice(results), "comparisons": {c["group"]: c for c in results["comparisons"]}}
    checks = {name: bool(check(run, minutes)) for name, check in CHECKS}
    return {"seed": seed, "wall_minutes": round(minutes, 2), **run, "verdict": verdict_lines(results),
            "checks": checks}


def markdown(runs: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """The ``phantom-demo`` section: provenance, one row per seed, the checks and each seed's verdict."""
    provenance = (f"Run {env['date'][:10]}, git `{env['git']}`, prokd {env['prokd']}, torch {env['torch']}, "
                  f"MONAI {env['monai']}, Python {env['python']}; {env['cpu_count']} CPU cores, no GPU.")
    lines = [
        "## Phantom demo (`prokd demo`), three seeds",
        "",
        f"Command: `{COMMAND} --seeds {' '.join(str(run['seed']) for run in runs)}`. {provenance} Each seed is a "
        "whole `prokd demo --seed S` (phantom, split and training seeded by S; budgets in optimiser steps, "
        "`src/prokd/demo.yaml`), run one after another on the otherwise idle machine. 3D Dice on the demo's "
        "phantom test cases (mean over cases).",
        "",
        "| seed | " + " | ".join(COLUMNS) + " | " + " | ".join(f"{group} − baseline" for group in COMPARED)
        + " | wall time | checks |",
        "|---" * (len(COLUMNS) + len(COMPARED) + 3) + "|",
    ]
    for run in runs:
        failed = [name for name, ok in run["checks"].items() if not ok]
        status = "all pass" if not failed else "FAIL: " + "; ".join(failed)
        values = " | ".join(f"{run['dice'][column]:.3f}" for column in COLUMNS)
        changes = " | ".join(change_text(run["comparisons"][group]) for group in COMPARED)
        lines.append(f"| {run['seed']} | {values} | {changes} | {run['wall_minutes']:.1f} min | {status} |")
    lines += ["", "Changes in Dice points, with the 95 % interval of the paired per-case differences over the test "
              "cases. Checks: " + "; ".join(name for name, _ in CHECKS) + " (at or above: not lower, or a tie within "
              "the case spread; clearly above: the paired interval lies above 0).", ""]
    for run in runs:
        lines += [f"Verdict, seed {run['seed']}:", "", *(f"- {line}" for line in run["verdict"]), ""]
    return "\n".join(lines)


def change_text(comparison: dict[str, Any]) -> str:
    """``"+6.2 [+3.9, +8.5]"``: the change in Dice points and its paired 95 % interval over the test cases."""
    spread = comparison["spread"] or {}
    interval = f" [{signed_points(spread['low'])}, {signed_points(spread['high'])}]" if "low" in spread else ""
    return signed_points(comparison["change_points"]) + interval


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "phantom_demo")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.out / f"seed{seed}"))
    env = environment_info(args.seeds[0])
    write_json(ROOT / "benchmarks" / "results" / "phantom_demo.json", {"command": COMMAND, "env": env, "runs": runs})
    update_section("phantom-demo", markdown(runs, env))
    failed = [(run["seed"], name) for run in runs for name, ok in run["checks"].items() if not ok]
    for seed, name in failed:
        print(f"seed {seed}: check failed: {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
