"""An experiment's results: one ROW per evaluated stage, one GROUP per recipe over seeds; JSON, CSV, Markdown.

A ROW holds the stage's test metrics (mean ± sd over its test cases, overall and per site), its efficiency
and training facts. A GROUP averages the rows of one recipe: the mean and sd over seeds of each row's case
mean, or, for a group with a single seed, the mean and sd over its test cases (``sd_over``). A COMPARISON
sets each distilled student group against its baseline (the same student without teachers, or the student its
entry names, see :func:`prokd.experiment.plan.link_baselines`), against its best teacher and, when evaluated,
against its teachers' ensemble (:mod:`prokd.eval.ensemble`), in Dice points, and says whether
the change is larger than the spread (:func:`judge_difference`: the seed spread, or for one seed each the paired
per-case differences over their common test cases). :func:`verdict_lines` says the same in plain words. A stage
evaluated under the field-of-view shifts (:mod:`prokd.eval.field_of_view_eval`) carries its mean Dice per shift
into its ROW and GROUP (:func:`field_of_view_table`). The layout is the contract with ``prokd report`` (see
``docs/architecture.md``).

A mean ± sd is shown as ``mean (n = 1)`` where a single value gives no spread (:func:`format_stats`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats as scipy_stats

from prokd.config import load_config
from prokd.eval.efficiency import format_count, format_ms
from prokd.eval.ensemble import ENSEMBLE_EVAL, teacher_eval
from prokd.eval.evaluate import METRICS, stored_summary
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE
from prokd.eval.field_of_view_eval import FIELD_OF_VIEW_EVAL, FIELD_OF_VIEW_TARGET, largest_drop, within_target
from prokd.eval.metrics import MISSING, format_stats
from prokd.files import atomic_write_text
from prokd.table import markdown_table
from prokd.runs.folder import environment_info, is_fresh, read_json, write_json

EFFICIENCY_KEYS = ("params", "macs", "latency_slice_ms", "latency_volume_ms")
LATENCY_SETTINGS = ("threads", "repeats", "volume_repeats")
FIELD_OF_VIEW_SHIFTS = ("original", *(shift.name for shift in FIELD_OF_VIEW_CURVE if shift.kind != "original"))
"""The field-of-view table's columns: the original, then the shifts in the protocol's order."""
CSV_KEYS = ("stage", "group", "kind", "model", "seed", "labeled_cases", "steps", *EFFICIENCY_KEYS, "train_minutes")


def describe(values: list[float]) -> dict[str, float | int]:
    """``{"mean", "sd", "n"}`` of ``values``; the sd uses ddof=1 and is 0 for a single value."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values)}


def mean_sd(values: list[float]) -> str:
    """``"0.851 ± 0.046"`` (sample sd), ``"0.500 (n = 1)"`` for one value, or ``"–"`` for no values."""
    return format_stats(describe(values)) if values else MISSING


def stage_row(
    stage: dict[str, Any],
    summary: dict[str, Any],
    efficiency: dict[str, Any] | None,
    last_epoch: dict[str, Any],
    unit: str,
    labeled_cases: int,
    slices: dict[str, float] | None = None,
    case_dice: dict[str, float] | None = None,
    ensemble: dict[str, Any] | None = None,
    retested: dict[str, dict[str, Any]] | None = None,
    val_dice: float | None = None,
    field_of_view: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ROW of one stage.

    Args:
        stage: its ``plan.json`` entry.
        summary: its test ``summarize`` output, ``{site | "overall": {metric: {"mean", "sd", "n"}}}``.
        efficiency: its ``efficiency.json``, or None when not measured yet (the efficiency keys are then None).
        last_epoch: the last ``metrics.jsonl`` record (``step``, ``elapsed_seconds``).
        unit: the distance unit of HD95 and ASSD (``"mm"`` or ``"px"``).
        labeled_cases: the number of labeled cases it trained on (its ``split.json`` training cases).
        slices: ``{"batch": slices per step, "unlabeled": how many of them are drawn from images without labels,
            on average}`` (:func:`slices_per_step`), or None when unknown.
        case_dice: ``{test case: its Dice}`` (its ``eval/test/cases.csv``), or None when unknown.
        ensemble: the ``summarize`` output of its teachers' ensemble on its test cases
            (``eval/teachers-ensemble/summary.json``), or None when not evaluated.
        retested: ``{teacher stage: the summarize output of that teacher on its test cases}`` for its teachers
            tested on other cases themselves (``eval/teacher-<stage>/summary.json``), as far as evaluated.
        val_dice: its best checkpoint's validation Dice (what recipes are chosen by), None without validation.
        field_of_view: the summary of its field-of-view evaluation on its test cases
            (``eval/field-of-view/summary.json``), or None when not evaluated; the row keeps ``{shift: {"dice",
            "ceiling"}}``, the means over its test cases.
    """
    return {
        **{key: stage[key] for key in ("stage", "group", "kind", "model", "seed", "run", "teachers", "aggregate")},
        "site": stage.get("site"),
        "baseline": stage.get("baseline"),
        "labeled": stage.get("labeled"),
        "labeled_cases": labeled_cases,
        "budget": stage.get("budget"),
        "slices": slices,
        **{key: efficiency[key] if efficiency else None for key in EFFICIENCY_KEYS},
        "train_minutes": round(last_epoch["elapsed_seconds"] / 60, 2),
        "val_dice": val_dice,
        "steps": last_epoch["step"],
        "distance_unit": unit,
        "overall": _metric_stats(summary["overall"]),
        "sites": {site: _metric_stats(stats) for site, stats in summary.items() if site != "overall"},
        "case_dice": case_dice,
        "teachers_ensemble": _metric_stats(ensemble["overall"]) if ensemble else None,
        "teachers_dice": {name: summary["overall"]["dice"]["mean"] for name, summary in (retested or {}).items()},
        "field_of_view": None if field_of_view is None else {
            shift: {score: stats["mean"] for score, stats in scores.items()} for shift, scores in field_of_view.items()
        },
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
    params, macs = _mean_of(rows, "params"), _mean_of(rows, "macs")
    return {
        "group": name,
        "kind": first["kind"],
        "model": first["model"],
        "seeds": [row["seed"] for row in rows],
        "labeled_cases": first["labeled_cases"],
        "budget": first["budget"],
        "slices": first.get("slices"),
        "teachers": first["teachers"],
        "aggregate": first["aggregate"],
        "site": first.get("site"),
        "steps": round(_mean_of(rows, "steps")),
        "params": None if params is None else round(params),
        "macs": None if macs is None else round(macs),
        **{key: _mean_of(rows, key) for key in (*EFFICIENCY_KEYS[2:], "train_minutes", "val_dice")},
        "overall": overall,
        "sites": per_site,
        "sd_over": "cases" if len(rows) == 1 else "seeds",
        "case_dice": first.get("case_dice") if len(rows) == 1 else None,
        "field_of_view": _field_of_view_mean(rows),
    }


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over ``rows``; None when any row lacks it (not measured yet)."""
    values = [row[key] for row in rows]
    return None if any(value is None for value in values) else float(np.mean(values))


def _field_of_view_mean(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
    """The mean over ``rows`` (seeds) of their field-of-view Dice and ceiling per shift; None when any row was not
    evaluated under the shifts."""
    curves = [row.get("field_of_view") for row in rows]
    if any(curve is None for curve in curves):
        return None
    return {
        shift: {score: float(np.mean([curve[shift][score] for curve in curves])) for score in scores}
        for shift, scores in curves[0].items()
    }


def compare_students(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One COMPARISON per distilled student group, in order of first appearance.

    ``change_points`` is 100 × (the group's mean Dice over seeds − its baseline's); ``spread`` is
    :func:`judge_difference` of the two groups and ``beyond_spread`` its verdict (None without a baseline or a
    spread to judge by). ``teacher_gap_points`` is 100 × (the group's mean Dice − its best teacher's Dice), a
    teacher's Dice on the group's test cases (``teachers_dice``) where it was tested on other cases itself.
    ``teachers`` counts its teacher stages, ``labeled`` is its restriction to K labeled cases (or None).
    ``ensemble_dice`` is its teachers' ensemble's Dice on its test cases and ``ensemble_gap_points`` 100 × (the
    group's mean Dice − that), both None when the ensemble was not evaluated.
    """
    groups = {group["group"]: group for group in group_rows(rows)}
    stage_dice = {row["stage"]: row["overall"]["dice"]["mean"] for row in rows}
    comparisons = []
    for group, members in rows_by_group(rows).items():
        teachers = [name for name in dict.fromkeys(t for row in members for t in row["teachers"]) if name in stage_dice]
        if not teachers:
            continue
        student = _seed_dice(groups[group])
        baseline_group = groups.get(members[0]["baseline"])
        baseline = _seed_dice(baseline_group) if baseline_group else None
        spread = judge_difference(groups[group], baseline_group) if baseline_group else None
        teacher_dice = {name: members[0].get("teachers_dice", {}).get(name, stage_dice[name]) for name in teachers}
        best = max(teachers, key=teacher_dice.__getitem__)
        ensemble = members[0].get("teachers_ensemble")
        ensemble_dice = ensemble["dice"]["mean"] if ensemble else None
        comparisons.append({
            "group": group,
            "teachers": len(teachers),
            "labeled": members[0]["labeled"],
            "dice": student,
            "baseline": baseline_group["group"] if baseline_group else None,
            "baseline_dice": baseline,
            "change_points": 100 * (student["mean"] - baseline["mean"]) if baseline else None,
            "spread": spread,
            "beyond_spread": spread["beyond"] if spread else None,
            "best_teacher": best,
            "best_teacher_dice": teacher_dice[best],
            "teacher_gap_points": 100 * (student["mean"] - teacher_dice[best]),
            "ensemble_dice": ensemble_dice,
            "ensemble_gap_points": None if ensemble_dice is None else 100 * (student["mean"] - ensemble_dice),
        })
    return comparisons


def judge_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """Whether GROUP ``a``'s Dice differs from GROUP ``b``'s by more than their spread.

    With two or more seeds each, the spread is the sd over seeds: ``{"over": "seeds", "beyond", "sd": [a, b]}``,
    beyond when the difference of the means exceeds both sds. With one seed each, evaluated on the same test
    cases, it is the case-to-case spread of the paired differences ``a_i - b_i`` (Dice points):
    ``{"over": "cases", "beyond", "n", "low", "high"}`` with the two-sided 95 % Student-t interval of their mean,
    beyond when it excludes 0. None otherwise (one seed against several, or different test cases).
    """
    seeds_a, seeds_b = _seed_dice(a), _seed_dice(b)
    if min(seeds_a["n"], seeds_b["n"]) >= 2:
        beyond = abs(seeds_a["mean"] - seeds_b["mean"]) > max(seeds_a["sd"], seeds_b["sd"])
        return {"over": "seeds", "beyond": bool(beyond), "sd": [seeds_a["sd"], seeds_b["sd"]]}
    cases_a, cases_b = a.get("case_dice"), b.get("case_dice")
    if max(seeds_a["n"], seeds_b["n"]) > 1 or not cases_a or len(cases_a) < 2 or set(cases_a) != set(cases_b or ()):
        return None
    differences = 100 * np.array([cases_a[case] - cases_b[case] for case in sorted(cases_a)])
    mean, n = float(differences.mean()), len(differences)
    half = float(scipy_stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / np.sqrt(n))
    return {"over": "cases", "beyond": bool(mean - half > 0 or mean + half < 0), "n": n, "low": mean - half,
            "high": mean + half}


def collect_results(out: str | Path) -> dict[str, Any]:
    """The results of the experiment folder ``out``: a ROW for every stage of ``plan.json`` whose test evaluation
    is newer than its best checkpoint (stages not evaluated yet are left out; a row's efficiency is None until its
    ``efficiency.json`` is newer than the checkpoint too, its teachers' ensemble None until evaluated), the GROUPs,
    the COMPARISONs and ``latency``, the threads and repeats of the latency measurement (None before it)."""
    out = Path(out)
    rows, measured = [], []
    for stage in read_json(out / "plan.json"):
        run_dir = out / stage["run"]
        summary, efficiency = stored_summary(run_dir, "test"), run_dir / "efficiency.json"
        if summary is not None:
            facts = read_json(efficiency) if is_fresh(efficiency, run_dir) else None
            measured += [facts] if facts else []
            labeled_cases = len(read_json(run_dir / "split.json")["train"])
            cases = _test_cases(run_dir)
            log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            rows.append(stage_row(stage, summary, facts, log[-1], cases[0]["distance_unit"],
                                  labeled_cases, slices_per_step(run_dir),
                                  {case["case"]: float(case["dice"]) for case in cases},
                                  stored_summary(run_dir, ENSEMBLE_EVAL), _retested(run_dir, stage["teachers"]),
                                  max((r["val_dice"] for r in log if r.get("val_dice") is not None), default=None),
                                  stored_summary(run_dir, FIELD_OF_VIEW_EVAL)))
    name = yaml.safe_load((out / "experiment.yaml").read_text())["name"]
    return {
        "env": environment_info(),
        "experiment": name,
        "rows": rows,
        "groups": group_rows(rows),
        "comparisons": compare_students(rows),
        "latency": {key: measured[0].get(key) for key in LATENCY_SETTINGS} if measured else None,
    }


def _retested(run_dir: Path, teachers: list[str]) -> dict[str, dict[str, Any]]:
    """``{teacher stage: its summary on the run's test cases}`` for the teachers evaluated there."""
    summaries = {name: stored_summary(run_dir, teacher_eval(name)) for name in teachers}
    return {name: summary for name, summary in summaries.items() if summary is not None}


def write_results(out: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results/results.{json,csv,md}`` in the experiment folder ``out``; returns the Markdown file."""
    folder = Path(out) / "results"
    write_json(folder / "results.json", results)
    sites = sorted({site for row in results["rows"] for site in row["sites"]})
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow([*CSV_KEYS, "dice", "dice_sd", *METRICS[1:], *(f"dice_{site}" for site in sites)])
    for row in results["rows"]:
        overall = row["overall"]
        site_dice = [row["sites"][site]["dice"]["mean"] if site in row["sites"] else "" for site in sites]
        writer.writerow([*(row[key] for key in CSV_KEYS), overall["dice"]["mean"], overall["dice"]["sd"],
                         *(overall[m]["mean"] for m in METRICS[1:]), *site_dice])
    atomic_write_text(folder / "results.csv", table.getvalue())
    return atomic_write_text(folder / "results.md", results_markdown(results))


def results_markdown(results: dict[str, Any]) -> str:
    """The verdict, the GROUPS (what was trained; accuracy; size and speed), their Dice per site, the COMPARISONS
    and, when any group was evaluated under them, the field-of-view shifts, as Markdown tables narrow enough to
    read in a terminal."""
    lines = [f"# Experiment `{results['experiment']}`", ""]
    groups = results["groups"]
    if not groups:
        return "\n".join([*lines, "No stage has been evaluated yet.", ""])
    sites = sorted({site for group in groups for site in group["sites"]})
    site_rows = [[g["group"], *(format_stats(g["sites"].get(site, {}).get("dice")) for site in sites)] for g in groups]
    lines += [
        "## Verdict", "", *(f"- {line}" for line in verdict_lines(results)),
        "", "## Models", "", MODELS_NOTE, "", *markdown_table(*models_table(groups)),
        "", "## Accuracy on the test cases", "", ACCURACY_NOTE, "", *markdown_table(*accuracy_table(results)),
        "", "## Size and speed", "", latency_note(results.get("latency")), "", *markdown_table(*speed_table(groups)),
        "", "## Dice per site", "", *markdown_table(["group", *sites], site_rows),
    ]
    own_site = own_site_table(groups)
    if own_site[1]:
        lines += ["", "## Own site and other sites", "", OWN_SITE_NOTE, "", *markdown_table(*own_site)]
    lines += comparisons_markdown(results.get("comparisons", []))
    field_of_view = field_of_view_table(groups)
    if field_of_view[1]:
        lines += ["", "## Field of view", "", FIELD_OF_VIEW_NOTE, "", *markdown_table(*field_of_view)]
    return "\n".join(lines) + "\n"


MODELS_NOTE = (
    "Labeled cases: the training cases whose labels a model learnt from (a student with `labeled: K` keeps K; a "
    "teacher by site has its site's). Budget: as configured; steps: training steps taken (mean over seeds). "
    "Slices / step: the batch size, and how many of its slices come from images without labels on average."
)
ACCURACY_NOTE = (
    "3D metrics on the test cases. ± is the sd over seeds of each seed's mean over the test cases; for a group with "
    "one seed (`cases` in the last column) it is the sd over its test cases. `(n = 1)`: one value, no spread. "
    "val Dice: the best checkpoint's Dice on the validation cases (mean over seeds; – without validation), what a "
    "recipe is chosen by."
)
OWN_SITE_NOTE = (
    "Models trained on one site's cases: test Dice on that site's test cases and on the other sites' (mean over "
    "their test cases; ± over seeds is in the table above), and how many Dice points they lose away from home."
)
FIELD_OF_VIEW_NOTE = (
    "3D test Dice when the framing changes (entries with field_of_view: true): every test case also cropped to 0.6x "
    "or padded to 1.5x and 2x its in-plane field of view (centred; the padding is empty space), or resampled to 0.5x "
    "and 2x its in-plane resolution, then predicted, its mask mapped back to the original grid and scored against "
    "the original label; mean over the test cases (and seeds). Largest drop: the shift furthest below the original, "
    f"in Dice points. The target is within {FIELD_OF_VIEW_TARGET:g} points of the original at every shift. Ceiling: "
    "the label itself shifted and mapped back, what a crop cuts off or a coarser grid blurs before any model is "
    "involved."
)
COMPARISON_NOTE = (
    "Change in Dice points (× 100) of the mean over seeds. Beyond spread: the change is larger than the sd over "
    "seeds of both groups; with one seed each, the 95 % interval of the paired per-case differences over their "
    "test cases excludes 0 (– when neither applies)."
)


def models_table(groups: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of what each GROUP is (its name says its kind): model, teachers, labeled cases, number
    of seeds, budget, steps, minutes."""
    header = ["group", "model", "teachers", "labeled cases", "seeds", "budget", "steps", "slices / step", "train min"]
    rows = [
        [g["group"], g["model"], teachers_text(g.get("teachers"), g.get("aggregate")),
         str(g.get("labeled_cases", MISSING)), str(len(g["seeds"])), budget_text(g.get("budget")),
         str(g.get("steps", MISSING)), slices_text(g.get("slices")), f"{g['train_minutes']:.1f}"]
        for g in groups
    ]
    return header, rows


def own_site_table(groups: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of each GROUP trained on one site (a teacher ``by: site``): its test Dice on that site's
    cases and on the other sites' (the mean over their test cases) and the difference in points; no rows when no
    group is."""
    header = ["group", "own site", "Dice there", "Dice elsewhere", "elsewhere − there"]
    rows = []
    for group in groups:
        sites = group["sites"]
        if group.get("site") not in sites or len(sites) < 2:
            continue
        own = sites[group["site"]]["dice"]["mean"]
        others = [stats["dice"] for site, stats in sites.items() if site != group["site"]]
        elsewhere = sum(d["mean"] * d["n"] for d in others) / sum(d["n"] for d in others)
        rows.append([group["group"], group["site"], f"{own:.3f}", f"{elsewhere:.3f}",
                     signed_points(100 * (elsewhere - own))])
    return header, rows


def field_of_view_table(groups: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the GROUPs evaluated under the field-of-view shifts: their Dice at the original and at
    each shift, the largest drop in points and whether it is within the target; first the ceilings of their test
    cases (:func:`field_of_view_ceilings`). No rows when no group was evaluated."""
    header = ["group", *FIELD_OF_VIEW_SHIFTS, "largest drop", f"within {FIELD_OF_VIEW_TARGET:g} points"]
    rows = [[name, *_curve_cells(ceiling), MISSING] for name, ceiling in field_of_view_ceilings(groups).items()]
    for group, dice in field_of_view_dice(groups).items():
        rows.append([group, *_curve_cells(dice), "yes" if within_target(dice) else "no"])
    return header, rows


def field_of_view_dice(groups: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{group: {shift: its mean Dice}}`` of the GROUPs evaluated under the field-of-view shifts, shifts in the
    table's order (:data:`FIELD_OF_VIEW_SHIFTS`)."""
    return {group["group"]: _shift_scores(group["field_of_view"], "dice") for group in groups
            if group.get("field_of_view")}


def field_of_view_ceilings(groups: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{name: {shift: the ceiling's mean Dice}}``: the label itself shifted and mapped back, on the test cases
    of the GROUPs evaluated under the field-of-view shifts; one per set of test sites (the first such group's),
    named ``ceiling: the label itself`` and, when there are several, after the sites."""
    by_sites = groups_by_test_sites([group for group in groups if group.get("field_of_view")])
    return {
        "ceiling: the label itself" + (f" ({', '.join(sites)})" if len(by_sites) > 1 else ""):
            _shift_scores(members[0]["field_of_view"], "ceiling")
        for sites, members in by_sites.items()
    }


def _shift_scores(curve: dict[str, dict[str, float]], score: str) -> dict[str, float]:
    """``{shift: the curve's score}`` (``dice`` or ``ceiling``), in the table's order."""
    return {shift: curve[shift][score] for shift in FIELD_OF_VIEW_SHIFTS}


def _curve_cells(values: dict[str, float]) -> list[str]:
    """The value at each shift and the largest drop: ``["0.876", "0.700", ..., "-17.6 (crop 0.6x)"]``."""
    shift, points = largest_drop(values)
    return [*(f"{value:.3f}" for value in values.values()), f"{signed_points(points)} ({shift})"]


def teachers_text(teachers: list[str] | None, aggregate: str | None) -> str:
    """``"–"``, the one teacher stage, or ``"4, adaptive"`` (how many, how they are aggregated)."""
    if not teachers:
        return MISSING
    return teachers[0] if len(teachers) == 1 else f"{len(teachers)}, {aggregate}"


def accuracy_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the GROUPS' test metrics (mean ± sd) and what the ± is over."""
    unit = "/".join(sorted({row["distance_unit"] for row in results["rows"]}))
    header = ["group", "val Dice", "Dice", "IoU", f"HD95 ({unit})", f"ASSD ({unit})", "± over"]
    rows = [
        [g["group"], MISSING if g.get("val_dice") is None else f"{g['val_dice']:.3f}",
         *(format_stats(g["overall"][m], 3 if m in ("dice", "iou") else 2) for m in METRICS), spread_text(g)]
        for g in results["groups"]
    ]
    return header, rows


def spread_text(group: dict[str, Any]) -> str:
    """What a GROUP's ± is over, and how many values: ``"3 seeds"``, ``"8 cases"``, ``"1 case"``."""
    n = group["overall"]["dice"]["n"]
    return f"{n} {group['sd_over'] if n > 1 else group['sd_over'][:-1]}"


def speed_table(groups: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the GROUPS' size and CPU latency (– before the latency is measured)."""
    header = ["group", "params", "MACs / slice", "slice latency", "volume latency"]
    rows = [
        [g["group"], format_count(g["params"]), format_count(g["macs"]), format_ms(g["latency_slice_ms"]),
         format_ms(g["latency_volume_ms"])]
        for g in groups
    ]
    return header, rows


def latency_note(latency: dict[str, Any] | None) -> str:
    """How the latencies were measured, with the repeat counts."""
    if latency is None:
        return "Latency: not measured yet (every model is timed once all stages are trained)."
    return (
        f"Latency: median CPU time of one 1×C×S×S slice ({latency['repeats']} repeats per model) and of the whole "
        f"prediction of one test volume ({latency.get('volume_repeats', MISSING)} repeats), {latency['threads']} "
        "thread(s); all models timed in one pass after training, taking turns (A, B, C, A, B, C, ...)."
    )


def slices_per_step(run_dir: Path) -> dict[str, float]:
    """``{"batch", "unlabeled"}`` of the run in ``run_dir`` (from its ``config.yaml``): slices per training step,
    and the mean number of them drawn from images without labels (``distill.unlabeled_fraction`` of the batch; all
    of it with ``distill.no_labels``)."""
    config = load_config(run_dir / "config.yaml")
    fraction = config.distill.unlabeled_share if config.distill else 0.0
    return {"batch": config.train.batch_size, "unlabeled": config.train.batch_size * fraction}


def slices_text(slices: dict[str, float] | None) -> str:
    """``{"batch": 12, "unlabeled": 4.0}`` → ``"12 (~4 unlab.)"``; ``{"batch": 8, "unlabeled": 0}`` → ``"8"``."""
    if slices is None:
        return MISSING
    if not slices["unlabeled"]:
        return str(slices["batch"])
    return f"{slices['batch']} (~{slices['unlabeled']:.0f} unlab.)"


def budget_text(budget: dict[str, Any] | None) -> str:
    """``{"steps": 200, "minutes": None}`` → ``"200 steps"``; ``{"steps": None, "minutes": 0.5}`` →
    ``"0.5 min"``."""
    if not budget:
        return MISSING
    return f"{budget['steps']} steps" if budget.get("steps") is not None else f"{budget['minutes']:g} min"


def comparison_table(comparisons: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the COMPARISONS table (shared by ``results.md``, the terminal and the report); the
    teachers' ensemble columns only when some student's ensemble was evaluated."""
    header = ["student", "Dice", "baseline", "its Dice", "change", "beyond spread", "best teacher", "its Dice",
              "student − teacher"]
    with_ensemble = any(c.get("ensemble_dice") is not None for c in comparisons)
    if with_ensemble:
        header += ["teachers' ensemble", "student − ensemble"]
    rows = []
    for c in comparisons:
        baseline = c["baseline_dice"]
        rows.append([
            c["group"], format_stats(c["dice"]), c["baseline"] or MISSING, format_stats(baseline),
            signed_points(c["change_points"]) if baseline else MISSING,
            {True: "yes", False: "no", None: MISSING}[c["beyond_spread"]],
            c["best_teacher"], f"{c['best_teacher_dice']:.3f}", signed_points(c["teacher_gap_points"]),
            *(ensemble_cells(c) if with_ensemble else []),
        ])
    return header, rows


def ensemble_cells(comparison: dict[str, Any]) -> list[str]:
    """A COMPARISON's teachers' ensemble Dice and the student's gap to it (``–`` when not evaluated)."""
    ensemble = comparison.get("ensemble_dice")
    if ensemble is None:
        return [MISSING, MISSING]
    return [f"{ensemble:.3f}", signed_points(comparison["ensemble_gap_points"])]


def comparisons_markdown(comparisons: list[dict[str, Any]]) -> list[str]:
    """The COMPARISONS as Markdown lines (none without distilled students)."""
    if not comparisons:
        return []
    return [
        "",
        "## Distilled students against their baseline and their best teacher",
        "",
        COMPARISON_NOTE,
        "",
        *markdown_table(*comparison_table(comparisons)),
    ]


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """What happened, in plain words: one line per distilled student group (against the same student trained
    without teachers, or the baseline its entry names, against its best teacher and its teachers' ensemble), then
    the best model overall (and the best student when a teacher is best); when groups are tested on different
    sites (entries with a ``test_site``), the best model on each site's test cases instead. Each difference is
    judged against the spread (:func:`judge_difference`), and the line says which spread, or that there is none
    to judge it by.
    Empty before any stage is evaluated."""
    groups = results["groups"]
    if not groups:
        return []
    lines = [comparison_line(c) for c in results.get("comparisons", [])]
    by_sites = groups_by_test_sites(groups)
    for sites, members in by_sites.items():
        where = "overall" if len(by_sites) == 1 else f"on the test cases of {', '.join(sites)}"
        ranked = sorted(members, key=lambda group: -group["overall"]["dice"]["mean"])
        lines.append(f"Best model {where}: " + ranking_text(ranked))
        students = [group for group in ranked if group["kind"] == "student"]
        if ranked[0]["kind"] != "student" and students:
            best_student = "Best student" if len(by_sites) == 1 else f"Best student {where}"
            lines.append(f"{best_student}: {ranking_text([students[0], ranked[0]])}")
    return lines


def groups_by_test_sites(groups: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """``{the sites of the test cases: the GROUPs tested there}``, in order of first appearance."""
    by_sites: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for group in groups:
        by_sites.setdefault(tuple(sorted(group.get("sites", {}))), []).append(group)
    return by_sites


def comparison_line(comparison: dict[str, Any]) -> str:
    """``"student-kd vs student-scratch: +3.1 Dice points (larger than the seed spread: sd 0.8 and 1.1 points);
    vs its teacher teacher-full-seed0: -2.0 points"``."""
    c, labeled = comparison, comparison.get("labeled")
    name = c["group"] if labeled is None else f"{c['group']} ({labeled} labeled cases)"
    if c["baseline"] is None:
        versus = f"{name}: no student trained on the same cases without teachers to compare with"
    else:
        same = "" if labeled is None else f" with the same {labeled} labeled cases"
        spread = spread_words(c.get("spread"))
        versus = f"{name} vs {c['baseline']}{same}: {signed_points(c['change_points'])} Dice points ({spread})"
    teacher = "its teacher" if c.get("teachers") == 1 else "its best teacher"
    line = f"{versus}; vs {teacher} {c['best_teacher']}: {signed_points(c['teacher_gap_points'])} points"
    if c.get("ensemble_gap_points") is None:
        return line
    return f"{line}; vs its teachers' ensemble: {signed_points(c['ensemble_gap_points'])} points"


def signed_points(points: float) -> str:
    """``3.14`` → ``"+3.1"``, ``-0.04`` → ``"+0.0"`` (no negative zero)."""
    return f"{round(points, 1) + 0.0:+.1f}"


def ranking_text(ranked: list[dict[str, Any]]) -> str:
    """The first GROUP with its Dice over seeds and, when there is a second, how far ahead of (or behind) it it is."""
    first = ranked[0]
    text = f"{first['group']} ({first['model']}), Dice {_seed_dice_text(first)}"
    if len(ranked) < 2:
        return text
    second = ranked[1]
    a, b = _seed_dice(first), _seed_dice(second)
    gap = 100 * (a["mean"] - b["mean"])
    direction = "ahead of" if gap >= 0 else "behind"
    spread = spread_words(judge_difference(first, second))
    return f"{text}; {abs(gap):.1f} Dice points {direction} {second['group']} ({spread})"


def spread_words(judgement: dict[str, Any] | None) -> str:
    """A :func:`judge_difference` in words: ``"larger than the seed spread: sd 0.8 and 1.1 points"``, ``"within
    the case spread: paired 95 % interval -0.9 to +0.7 points over 20 test cases"``."""
    if judgement is None:
        return "no spread to judge it by: one seed against several, or different test cases"
    where = "larger than" if judgement["beyond"] else "within"
    if judgement["over"] == "seeds":
        sd_a, sd_b = judgement["sd"]
        return f"{where} the seed spread: sd {100 * sd_a:.1f} and {100 * sd_b:.1f} points"
    interval = f"{signed_points(judgement['low'])} to {signed_points(judgement['high'])}"
    return f"{where} the case spread: paired 95 % interval {interval} points over {judgement['n']} test cases"


def _seed_dice(group: dict[str, Any]) -> dict[str, Any]:
    """A GROUP's Dice over its seeds, ``{"mean", "sd", "n"}`` with n the number of seeds (sd 0 for one seed)."""
    dice = group["overall"]["dice"]
    seeds = len(group["seeds"])
    return {"mean": dice["mean"], "sd": dice["sd"] if seeds > 1 else 0.0, "n": seeds}


def _seed_dice_text(group: dict[str, Any]) -> str:
    stats = _seed_dice(group)
    if stats["n"] < 2:
        return f"{stats['mean']:.3f} (one seed)"
    return f"{format_stats(stats)} (mean ± sd over {stats['n']} seeds)"


def _metric_stats(stats: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    return {m: {"mean": stats[m]["mean"], "sd": stats[m]["sd"], "n": stats[m]["n"]} for m in METRICS}


def _test_cases(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the run's ``eval/test/cases.csv``: one per test case."""
    with (run_dir / "eval" / "test" / "cases.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))
