"""A tiny experiment folder in the layout `prokd experiment` writes (the contract `prokd report` reads), built
once per session.

Three trained stages on the phantom at 64²: two supervised teachers (``unet-small``, ``unet-tiny``) and a
``unet-tiny`` student distilled from both with adaptive aggregation; the first teacher's folder is copied as a
second seed, so one group has two seeds. ``efficiency.json`` (hand-made latencies), ``plan.json`` and
``results/results.json`` are written here as ``prokd experiment`` would. The report of that folder is written
once too (``report_index``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import pytest
import yaml

from prokd.config import DistillConfig
from prokd.eval.evaluate import METRICS, evaluate_run
from prokd.runs.folder import environment_info
from prokd.train.runner import train_run

LATENCY_MS = {"teacher-a": 10.0, "teacher-b": 3.0, "student-multi": 2.0}
LATENCY_SETTINGS = {"threads": 1, "repeats": 7, "volume_repeats": 3}
STAGES = [  # stage, group, kind, model, seed, teachers
    ("teacher-a-seed0", "teacher-a", "teacher", "unet-small", 0, []),
    ("teacher-b-seed0", "teacher-b", "teacher", "unet-tiny", 0, []),
    ("student-multi-seed0", "student-multi", "student", "unet-tiny", 0, ["teacher-a-seed0", "teacher-b-seed0"]),
]


@pytest.fixture(scope="session")
def experiment_dir(phantom_data, tiny_config, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("experiment")
    (root / "experiment.yaml").write_text(yaml.safe_dump({"name": "tiny", "data": str(phantom_data)}))
    plan = []
    for stage, group, kind, model, seed, teachers in STAGES:
        config = tiny_config(epochs=2, steps_per_epoch=5, threads=1, seed=seed)
        config.model.name = model
        if teachers:
            config.distill = DistillConfig(teachers=[str(root / "runs" / t) for t in teachers], aggregate="adaptive")
        train_run(phantom_data, root / "runs" / stage, config)
        plan.append(plan_entry(stage, group, kind, model, seed, teachers))
    shutil.copytree(root / "runs" / "teacher-a-seed0", root / "runs" / "teacher-a-seed1")
    plan.insert(1, plan_entry("teacher-a-seed1", "teacher-a", "teacher", "unet-small", 1, []))
    for entry in plan:
        run = root / entry["run"]
        evaluate_run(run, phantom_data, split="test")
        write_efficiency(run, LATENCY_MS[entry["group"]])
    (root / "plan.json").write_text(json.dumps(plan, indent=2))
    rows = [result_row(root, entry) for entry in plan]
    groups = [group_summary([r for r in rows if r["group"] == g]) for g in dict.fromkeys(r["group"] for r in rows)]
    results = {"env": environment_info(0), "experiment": "tiny", "rows": rows, "groups": groups,
               "comparisons": [teacher_comparison(rows, "student-multi-seed0")], "latency": LATENCY_SETTINGS}
    (root / "results").mkdir()
    (root / "results" / "results.json").write_text(json.dumps(results, indent=2))
    return root


def plan_entry(stage: str, group: str, kind: str, model: str, seed: int, teachers: list[str]) -> dict[str, Any]:
    return {
        "stage": stage, "kind": kind, "group": group, "model": model, "seed": seed, "run": f"runs/{stage}",
        "teachers": teachers, "aggregate": "adaptive" if teachers else None, "labeled": None,
        "budget": {"steps": 10, "minutes": None},
    }


def write_efficiency(run: Path, latency_ms: float) -> None:
    efficiency = {
        "params": 1000, "macs": 10**6, "latency_slice_ms": latency_ms, "latency_volume_ms": 20 * latency_ms,
        "slice_input": [1, 1, 64, 64], "volume_slices": 20, **LATENCY_SETTINGS,
    }
    (run / "efficiency.json").write_text(json.dumps(efficiency))


def result_row(root: Path, entry: dict[str, Any]) -> dict[str, Any]:
    run = root / entry["run"]
    summary = json.loads((run / "eval" / "test" / "summary.json").read_text())["summary"]
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    efficiency = json.loads((run / "efficiency.json").read_text())
    train_cases = len(json.loads((run / "split.json").read_text())["train"])
    stats = lambda s: {m: {k: s[m][k] for k in ("mean", "sd", "n")} for m in METRICS}  # noqa: E731
    return {
        **{k: entry[k] for k in ("stage", "group", "kind", "model", "seed", "run", "teachers", "aggregate")},
        "baseline": None, "labeled": None, "labeled_cases": train_cases, "budget": entry["budget"],
        **{k: efficiency[k] for k in ("params", "macs", "latency_slice_ms", "latency_volume_ms")},
        "train_minutes": log[-1]["elapsed_seconds"] / 60, "steps": log[-1]["step"], "distance_unit": "mm",
        "overall": stats(summary["overall"]),
        "sites": {site: stats(s) for site, s in summary.items() if site != "overall"},
    }


def teacher_comparison(rows: list[dict[str, Any]], stage: str) -> dict[str, Any]:
    """The contract's COMPARISON of a one-seed student without a baseline: its gap to the best teacher."""
    dice = {row["stage"]: row["overall"]["dice"]["mean"] for row in rows}
    student = next(row for row in rows if row["stage"] == stage)
    best = max(student["teachers"], key=dice.__getitem__)
    return {
        "group": student["group"], "teachers": len(student["teachers"]), "labeled": None,
        "dice": {"mean": dice[stage], "sd": 0.0, "n": 1}, "baseline": None,
        "baseline_dice": None, "change_points": None, "beyond_spread": None, "best_teacher": best,
        "best_teacher_dice": dice[best], "teacher_gap_points": 100 * (dice[stage] - dice[best]),
    }


def group_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract's GROUP: means over seeds; a single seed keeps its over-cases sd."""
    first = rows[0]

    def describe(pick) -> dict[str, dict[str, float]]:
        out = {}
        for metric in METRICS:
            values = [pick(r)[metric] for r in rows]
            if len(rows) == 1:
                out[metric] = values[0]
            else:
                means = [v["mean"] for v in values]
                out[metric] = {"mean": mean(means), "sd": stdev(means), "n": len(means)}
        return out

    return {
        "group": first["group"], "kind": first["kind"], "model": first["model"], "seeds": [r["seed"] for r in rows],
        **{k: first[k] for k in ("labeled_cases", "budget", "teachers", "aggregate")},
        "steps": round(mean(r["steps"] for r in rows)),
        **{k: mean(r[k] for r in rows) for k in ("params", "macs", "latency_slice_ms", "latency_volume_ms")},
        "train_minutes": mean(r["train_minutes"] for r in rows),
        "overall": describe(lambda r: r["overall"]),
        "sites": {site: describe(lambda r, s=site: r["sites"][s]) for site in first["sites"]},
        "sd_over": "seeds" if len(rows) > 1 else "cases",
    }


@pytest.fixture(scope="session")
def figure_count() -> int:
    """Figures in the tiny experiment's report: training curves, Dice vs latency, site bars, overlays, the
    teachers' disagreement for its one multi-teacher student, and the teachers' reliability diagrams."""
    return 6


@pytest.fixture(scope="session")
def report_index(experiment_dir) -> Path:
    """The tiny experiment's report, written once: ``DIR/report/index.html``."""
    from prokd.report.page import write_report

    return write_report(experiment_dir)
