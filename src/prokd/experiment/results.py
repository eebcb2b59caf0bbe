"""An experiment's results: one ROW per evaluated stage, one GROUP per recipe over seeds; JSON, CSV, Markdown.

A ROW holds the stage's test metrics (mean ± sd over its test cases, overall and per site), its efficiency
and training facts. A GROUP averages the rows of one recipe: the mean and sd over seeds of each row's case
mean, or, for a group with a single seed, the mean and sd over its test cases (``sd_over``). A COMPARISON
sets each distilled student group against its baseline (the same student without teachers, see
:func:`prokd.experiment.plan.link_baselines`) and against its best teacher, in Dice points, and says whether
the change is larger than the seed spread. The layout is the contract with ``prokd report`` (see
``docs/architecture.md``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from prokd.eval.evaluate import METRICS, stored_summary
from prokd.train.run_folder import environment_info, is_fresh, read_json, write_json

EFFICIENCY_KEYS = ("params", "macs", "latency_slice_ms", "latency_volume_ms")
CSV_KEYS = ("stage", "group", "kind", "model", "seed", *EFFICIENCY_KEYS, "train_minutes")


def format_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def describe(values: list[float]) -> dict[str, float | int]:
    """``{"mean", "sd", "n"}`` of ``values``; the sd uses ddof=1 and is 0 for a single value."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values)}


def mean_sd(values: list[float]) -> str:
    """``"0.851 ± 0.046"`` (sample sd), or ``"–"`` for no values."""
    if not values:
        return "–"
    stats = describe(values)
    return format_mean_sd(stats["mean"], stats["sd"])


def stage_row(
    stage: dict[str, Any], summary: dict[str, Any], efficiency: dict[str, Any], last_epoch: dict[str, Any], unit: str
) -> dict[str, Any]:
    """The ROW of one stage.

    Args:
        stage: its ``plan.json`` entry.
        summary: its test ``summarize`` output, ``{site | "overall": {metric: {"mean", "sd", "n"}}}``.
        efficiency: its ``efficiency.json``.
        last_epoch: the last ``metrics.jsonl`` record (``step``, ``elapsed_seconds``).
        unit: the distance unit of HD95 and ASSD (``"mm"`` or ``"px"``).
    """
    return {
        **{key: stage[key] for key in ("stage", "group", "kind", "model", "seed", "run", "teachers", "aggregate")},
        "baseline": stage.get("baseline"),
        **{key: efficiency[key] for key in EFFICIENCY_KEYS},
        "train_minutes": round(last_epoch["elapsed_seconds"] / 60, 2),
        "steps": last_epoch["step"],
        "distance_unit": unit,
        "overall": _metric_stats(summary["overall"]),
        "sites": {site: _metric_stats(stats) for site, stats in summary.items() if site != "overall"},
    }


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One GROUP per distinct ``group`` of ``rows``, in order of first appearance."""
    return [_group(name, members) for name, members in rows_by_group(rows).items()]


def rows_by_group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``{group: its rows}``, groups in order of first appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    return groups


def _group(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    first = rows[0]
    sites = sorted({site for row in rows for site in row["sites"]})
    if len(rows) == 1:
        overall, per_site = first["overall"], first["sites"]
    else:
        overall = {m: describe([row["overall"][m]["mean"] for row in rows]) for m in METRICS}
        per_site = {
            site: {m: describe([r["sites"][site][m]["mean"] for r in rows if site in r["sites"]]) for m in METRICS}
            for site in sites
        }
    return {
        "group": name,
        "kind": first["kind"],
        "model": first["model"],
        "seeds": [row["seed"] for row in rows],
        "params": round(float(np.mean([row["params"] for row in rows]))),
        "macs": round(float(np.mean([row["macs"] for row in rows]))),
        **{key: float(np.mean([row[key] for row in rows])) for key in (*EFFICIENCY_KEYS[2:], "train_minutes")},
        "overall": overall,
        "sites": per_site,
        "sd_over": "cases" if len(rows) == 1 else "seeds",
    }


def compare_students(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One COMPARISON per distilled student group, in order of first appearance.

    ``change_points`` is 100 × (the group's mean Dice over seeds − its baseline's); ``beyond_spread`` is whether
    that change is larger than both groups' sd over seeds (None when either has fewer than two seeds, or there
    is no baseline). ``teacher_gap_points`` is 100 × (the group's mean Dice − its best teacher's Dice).
    """
    groups = rows_by_group(rows)
    seed_dice = {group: [row["overall"]["dice"]["mean"] for row in members] for group, members in groups.items()}
    stage_dice = {row["stage"]: row["overall"]["dice"]["mean"] for row in rows}
    comparisons = []
    for group, members in groups.items():
        teachers = [name for name in dict.fromkeys(t for row in members for t in row["teachers"]) if name in stage_dice]
        if not teachers:
            continue
        student = describe(seed_dice[group])
        baseline_name = members[0]["baseline"]
        baseline = describe(seed_dice[baseline_name]) if baseline_name in seed_dice else None
        best = max(teachers, key=stage_dice.__getitem__)
        comparisons.append({
            "group": group,
            "dice": student,
            "baseline": baseline_name if baseline else None,
            "baseline_dice": baseline,
            "change_points": 100 * (student["mean"] - baseline["mean"]) if baseline else None,
            "beyond_spread": _beyond_spread(student, baseline),
            "best_teacher": best,
            "best_teacher_dice": stage_dice[best],
            "teacher_gap_points": 100 * (student["mean"] - stage_dice[best]),
        })
    return comparisons


def _beyond_spread(student: dict[str, float | int], baseline: dict[str, float | int] | None) -> bool | None:
    if baseline is None or min(student["n"], baseline["n"]) < 2:
        return None
    return abs(student["mean"] - baseline["mean"]) > max(student["sd"], baseline["sd"])


def collect_results(out: str | Path) -> dict[str, Any]:
    """The results of the experiment folder ``out``: a ROW for every stage of ``plan.json`` whose test evaluation
    and efficiency are newer than its best checkpoint (stages not evaluated yet are left out), and the GROUPs."""
    out = Path(out)
    rows = []
    for stage in read_json(out / "plan.json"):
        run_dir = out / stage["run"]
        summary, efficiency = stored_summary(run_dir, "test"), run_dir / "efficiency.json"
        if summary is not None and is_fresh(efficiency, run_dir):
            facts = read_json(efficiency)
            rows.append(stage_row(stage, summary, facts, _last_epoch(run_dir), _unit(run_dir)))
    name = yaml.safe_load((out / "experiment.yaml").read_text())["name"]
    return {
        "env": environment_info(),
        "experiment": name,
        "rows": rows,
        "groups": group_rows(rows),
        "comparisons": compare_students(rows),
    }


def write_results(out: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results/results.{json,csv,md}`` in the experiment folder ``out``; returns the Markdown file."""
    folder = Path(out) / "results"
    write_json(folder / "results.json", results)
    sites = sorted({site for row in results["rows"] for site in row["sites"]})
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_KEYS, "dice", "dice_sd", *METRICS[1:], *(f"dice_{site}" for site in sites)])
        for row in results["rows"]:
            overall = row["overall"]
            site_dice = [row["sites"][site]["dice"]["mean"] if site in row["sites"] else "" for site in sites]
            writer.writerow([*(row[key] for key in CSV_KEYS), overall["dice"]["mean"], overall["dice"]["sd"],
                             *(overall[m]["mean"] for m in METRICS[1:]), *site_dice])
    markdown = folder / "results.md"
    markdown.write_text(results_markdown(results))
    return markdown


def results_markdown(results: dict[str, Any]) -> str:
    """The GROUPS as a Markdown table (mean ± sd), then their Dice per site."""
    lines = [f"# Experiment `{results['experiment']}`", ""]
    groups = results["groups"]
    if not groups:
        return "\n".join([*lines, "No stage has been evaluated yet.", ""])
    unit = "/".join(sorted({row["distance_unit"] for row in results["rows"]}))
    lines += [
        "3D metrics on the test cases. ± is the sd over seeds of each seed's mean over the test cases; for a group "
        "with one seed (`cases` in the last column) it is the sd over the test cases. Latency: median CPU time of "
        "one 1×C×S×S slice and of the whole prediction of one test volume.",
        "",
        "| group | kind | model | seeds | params | MACs / slice | slice latency | volume latency | train min | Dice "
        f"| IoU | HD95 ({unit}) | ASSD ({unit}) | ± over |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        stats = group["overall"]
        cells = [
            group["group"], group["kind"], f"`{group['model']}`", ", ".join(map(str, group["seeds"])),
            f"{group['params'] / 1e6:.2f} M", _macs(group["macs"]), f"{group['latency_slice_ms']:.1f} ms",
            _milliseconds(group["latency_volume_ms"]), f"{group['train_minutes']:.1f}",
            *(format_mean_sd(stats[m]["mean"], stats[m]["sd"], 3 if m in ("dice", "iou") else 2) for m in METRICS),
            group["sd_over"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    sites = sorted({site for group in groups for site in group["sites"]})
    lines += ["", "## Dice per site", "", "| group | " + " | ".join(sites) + " |", "|---|" + "---|" * len(sites)]
    for group in groups:
        dice = [group["sites"][s]["dice"] if s in group["sites"] else None for s in sites]
        cells = [format_mean_sd(d["mean"], d["sd"]) if d else "–" for d in dice]
        lines.append(f"| {group['group']} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, *comparisons_markdown(results.get("comparisons", []))]) + "\n"


COMPARISON_NOTE = (
    "Change in Dice points (× 100) of the mean over seeds. Beyond spread: the change is larger than the sd over "
    "seeds of both groups (– with fewer than two seeds each)."
)


def comparison_table(comparisons: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the COMPARISONS table (shared by ``results.md`` and the report)."""
    header = ["student", "Dice", "baseline", "its Dice", "change", "beyond spread", "best teacher", "its Dice",
              "student − teacher"]
    rows = []
    for c in comparisons:
        baseline = c["baseline_dice"]
        rows.append([
            c["group"], format_mean_sd(c["dice"]["mean"], c["dice"]["sd"]), c["baseline"] or "–",
            format_mean_sd(baseline["mean"], baseline["sd"]) if baseline else "–",
            f"{c['change_points']:+.1f}" if baseline else "–", {True: "yes", False: "no", None: "–"}[c["beyond_spread"]],
            c["best_teacher"], f"{c['best_teacher_dice']:.3f}", f"{c['teacher_gap_points']:+.1f}",
        ])
    return header, rows


def comparisons_markdown(comparisons: list[dict[str, Any]]) -> list[str]:
    """The COMPARISONS as Markdown lines (none without distilled students)."""
    if not comparisons:
        return []
    header, rows = comparison_table(comparisons)
    table = [header, ["---"] * len(header), *rows]
    return [
        "",
        "## Distilled students against their baseline and their best teacher",
        "",
        COMPARISON_NOTE,
        "",
        *("| " + " | ".join(line) + " |" for line in table),
    ]


def _macs(macs: float) -> str:
    return f"{macs / 1e9:.2f} G" if macs >= 1e9 else f"{macs / 1e6:.1f} M"


def _milliseconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _metric_stats(stats: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    return {m: {"mean": stats[m]["mean"], "sd": stats[m]["sd"], "n": stats[m]["n"]} for m in METRICS}


def _last_epoch(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def _unit(run_dir: Path) -> str:
    with (run_dir / "eval" / "test" / "cases.csv").open(newline="") as handle:
        return next(csv.DictReader(handle))["distance_unit"]
