"""What the report says, section by section, built from an experiment folder:

1. header: experiment, data, date, git hash, versions, hardware;
2. results per group (mean ± sd, over seeds or cases as stated), test Dice per site, and each distilled
   student against its baseline and its best teacher;
3. training curves; 4. Dice versus CPU latency with the Pareto front; 5. per-site Dice bars;
6. qualitative overlays of the best, median and worst test case;
7. for multi-teacher students: the teachers' mean aggregation weights and their disagreement.

Captions say what each figure shows and on how many test cases.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np

from prokd.config import load_config
from prokd.eval.evaluate import METRICS
from prokd.experiment.results import COMPARISON_NOTE, comparison_table
from prokd.report.blocks import Block, Facts, Heading, Paragraph, Plot, Table
from prokd.report.figures import Colour, Curve, GroupPoint, dice_latency, group_colours, pareto_front
from prokd.report.figures import site_dice_bars, training_curves
from prokd.report.folder import Experiment
from prokd.report.overlays import SliceView, VolumePredictions, disagreement_figure, overlay_figure, select_cases
from prokd.report.overlays import slice_view
from prokd.report.weights import TeacherWeights, teacher_weights

__all__ = ["report_blocks"]

MISSING = "–"
AGGREGATION_NOTES = {
    "mean": "The mean aggregation gives every teacher the same weight everywhere.",
    "weighted": "The weighted aggregation uses fixed weights from the teachers' validation scores.",
    "adaptive": "The adaptive rule weighs teachers per pixel by their confidence and their consensus with the "
    "other teachers (its label-free branch).",
    "learned": "The learned gate is restored with its trained weights from the student's checkpoint.",
}


def report_blocks(experiment: Experiment) -> tuple[str, list[Block]]:
    """The report's title and its blocks, in order."""
    colours = group_colours([group["group"] for group in experiment.groups])
    ranking = experiment.first_seed(experiment.best_group()["group"])
    test_cases = experiment.test_cases(ranking)
    label_map = load_config(experiment.run_dir(ranking) / "config.yaml").label_map
    predictions = VolumePredictions(experiment.data, label_map)
    picks = select_cases({case["case"]: case["dice"] for case in test_cases})
    views = [slice_view(pick, predictions.case(case)) for pick, case in picks]
    title = f"prokd report: {experiment.name}"
    return title, [
        *header(experiment, title),
        *results(experiment, test_cases),
        *curves(experiment, colours),
        *accuracy_latency(experiment, colours, len(test_cases)),
        *site_bars(experiment, colours, test_cases),
        *overlays(experiment, predictions, views, ranking, len(test_cases)),
        *teachers(experiment, predictions, views),
    ]


def header(experiment: Experiment, title: str) -> list[Block]:
    env = experiment.env
    packages = ("prokd", "python", "torch", "monai", "numpy")
    versions = ", ".join(f"{name} {env[name]}" for name in packages if name in env)
    hardware = (
        f"{env.get('processor', '?')}, {env.get('cpu_count', '?')} CPUs, {env.get('threads', '?')} torch threads; "
        f"{env.get('platform', '?')}"
    )
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    facts = [
        ("experiment", experiment.name),
        ("folder", str(experiment.root.resolve())),
        ("data", str(experiment.data)),
        ("date", str(env.get("date", MISSING))),
        ("git", str(env.get("git") or "unknown")),
        ("versions", versions),
        ("hardware", hardware),
        ("report written", written),
    ]
    return [Heading(title, 1), Facts(facts)]


def results(experiment: Experiment, test_cases: list[dict[str, Any]]) -> list[Block]:
    unit = experiment.rows[0].get("distance_unit", "px")
    header_cells = [
        "group", "kind", "model", "seeds", "params", "MACs", "latency / slice (ms)", "latency / volume (ms)",
        "training (min)", "Dice", "IoU", f"HD95 ({unit})", f"ASSD ({unit})", "sd over",
    ]
    rows = [
        [
            group["group"], group["kind"], group["model"], ", ".join(map(str, group["seeds"])),
            count(group["params"]), count(group["macs"]), milliseconds(group["latency_slice_ms"]),
            milliseconds(group["latency_volume_ms"]), minutes(group["train_minutes"]),
            *(mean_sd(group["overall"].get(metric), 2 if metric in ("hd95", "assd") else 3) for metric in METRICS),
            spread(group),
        ]
        for group in experiment.groups
    ]
    sites = experiment.sites()
    site_rows = [
        [group["group"], *(mean_sd(group["sites"].get(site, {}).get("dice"), 3) for site in sites)]
        for group in experiment.groups
    ]
    note = (
        f"Test split: {split_note(test_cases)}. Dice, IoU, HD95 and ASSD are 3D metrics per test case. A group's "
        "value is the mean ± sd over its seeds of each seed's mean over the test cases ('sd over: seeds'); a group "
        "with one seed shows mean ± sd over the test cases instead ('sd over: cases'). Params, MACs (one forward "
        "pass on one slice), latencies and training minutes are means over the group's seeds."
    )
    blocks = [
        Heading("Results"),
        Paragraph(note),
        Table(header_cells, rows),
        Heading("Test Dice per site", 3),
        Table(["group", *sites], site_rows),
    ]
    if experiment.comparisons:
        blocks += [
            Heading("Distilled students against their baseline and their best teacher", 3),
            Paragraph(COMPARISON_NOTE + " The baseline is the same student trained without teachers."),
            Table(*comparison_table(experiment.comparisons)),
        ]
    return blocks


def curves(experiment: Experiment, colours: dict[str, Colour]) -> list[Block]:
    runs = [
        Curve.from_log(row["group"], row["seed"], experiment.metrics_log(row))
        for group in experiment.groups
        for row in experiment.group_rows(group["group"])
    ]
    caption = (
        "Training loss (left) and validation Dice (right) per epoch, one line per run; a group's seeds share its "
        "colour and differ in line style. The loss is each run's own objective (distillation adds KD terms to the "
        "segmentation loss), so compare losses within a kind only. Validation Dice is the 3D Dice on the run's "
        "validation cases, which choose its best checkpoint."
    )
    return [Heading("Training curves"), Plot("training_curves", training_curves(runs, colours), caption)]


def accuracy_latency(experiment: Experiment, colours: dict[str, Colour], n_test: int) -> list[Block]:
    groups = experiment.groups
    points = [
        GroupPoint(g["group"], g["latency_slice_ms"], g["overall"]["dice"]["mean"], g["overall"]["dice"]["sd"])
        for g in groups
    ]
    front = pareto_front([p.latency_ms for p in points], [p.dice for p in points])
    optimal = "; ".join(
        f"{points[i].name} ({milliseconds(points[i].latency_ms)} ms, Dice {points[i].dice:.3f})" for i in front
    )
    caption = (
        f"Mean test Dice ({n_test} test cases; error bars: sd as in the results table) against the mean CPU latency "
        f"of one forward pass on one slice ({latency_setup(experiment)}), one point per group. The dashed staircase "
        "is the Pareto front: no other group is both at least as fast and at least as accurate as a group on it."
    )
    return [
        Heading("Accuracy versus CPU latency"),
        Plot("dice_vs_latency", dice_latency(points, colours), caption),
        Paragraph(f"Pareto-optimal groups (fastest first): {optimal}."),
    ]


def site_bars(experiment: Experiment, colours: dict[str, Colour], test_cases: list[dict[str, Any]]) -> list[Block]:
    names, sites = [g["group"] for g in experiment.groups], experiment.sites()
    stats = [[g["sites"].get(site, {}).get("dice") for site in sites] for g in experiment.groups]
    mean = np.array([[np.nan if s is None else s["mean"] for s in row] for row in stats], dtype=float)
    sd = np.array([[np.nan if s is None else s["sd"] for s in row] for row in stats], dtype=float)
    caption = (
        f"Test Dice per site and group: bars are means, error bars sd over seeds (or over the site's test cases for "
        f"single-seed groups; one case gives sd 0). Test cases: {split_note(test_cases)}."
    )
    return [Heading("Dice per site"), Plot("site_dice", site_dice_bars(names, sites, mean, sd, colours), caption)]


def overlays(
    experiment: Experiment,
    predictions: VolumePredictions,
    views: list[SliceView],
    ranking: dict[str, Any],
    n_test: int,
) -> list[Block]:
    models = [(g["group"], experiment.run_dir(experiment.first_seed(g["group"]))) for g in experiment.groups]
    panels = [
        [
            (f"{name}\nDice {predictions.dice(run, v.case_id):.3f}", predictions.predict(run, v.case_id).mask[v.index])
            for name, run in models
        ]
        for v in views
    ]
    chosen_by = "the best student group" if ranking["kind"] == "student" else "the best group (there is no student)"
    caption = (
        f"Best, median and worst of the {n_test} test cases, ranked by the 3D Dice of {ranking['stage']} (first "
        f"seed of {chosen_by}, {ranking['group']}). For each case, the slice with the largest ground-truth area: "
        "the image, the ground truth (green), then each group's first-seed prediction (orange; best checkpoint, "
        "post-processed mask; ground truth in thin green), titled with that model's 3D Dice on the whole case."
    )
    return [Heading("Qualitative results"), Plot("overlays", overlay_figure(views, panels), caption)]


def teachers(experiment: Experiment, predictions: VolumePredictions, views: list[SliceView]) -> list[Block]:
    first_seeds = [experiment.first_seed(group["group"]) for group in experiment.groups]
    students = [row for row in first_seeds if len(row.get("teachers") or []) > 1]
    if not students:
        return []
    blocks: list[Block] = [
        Heading("Multi-teacher students"),
        Paragraph(
            "For the first seed of each student distilled from several teachers: how its aggregator weighs the "
            "teachers on the test cases, and where the teachers disagree on the slices shown above."
        ),
    ]
    for row in students:
        runs = experiment.teacher_runs(row)
        cases = [predictions.case(case["case"]) for case in experiment.test_cases(row)]
        weights = teacher_weights(experiment.run_dir(row), runs, cases)
        probabilities = [
            np.stack([predictions.predict(run, v.case_id).probability[v.index] for run in runs]) for v in views
        ]
        caption = (
            f"Teachers of {row['stage']} on the slices of the qualitative results: each teacher's foreground "
            "probability (its whole-volume prediction, temperature 1) and the teachers' disagreement, the per-pixel "
            f"sd over the {len(runs)} teachers (0: all agree; 0.5: an even split between certain teachers). "
            "Ground truth in green."
        )
        blocks += [
            Heading(f"{row['stage']} ({weights.aggregate} aggregation)", 3),
            Paragraph(weights_note(row["stage"], weights, len(cases))),
            weights_table(weights),
            Plot(
                f"teachers_{file_name(row['stage'])}",
                disagreement_figure(views, weights.teachers, probabilities),
                caption,
            ),
        ]
    return blocks


def weights_note(stage: str, weights: TeacherWeights, n_cases: int) -> str:
    return (
        f"Mean aggregation weight of each teacher of {stage} on its {n_cases} test cases: every slice on the "
        f"student's grid, the teachers' probabilities softened at the distillation temperature, weighed by the "
        f"student's aggregator without the label (as on an unlabelled image). 'all pixels' averages every pixel "
        f"(the trust the objective gives each teacher's feature term); 'prostate' averages the pixels where some "
        f"teacher's foreground probability is at least 0.5. {AGGREGATION_NOTES.get(weights.aggregate, '')} "
        f"Each column sums to 1."
    )


def weights_table(weights: TeacherWeights) -> Table:
    sites = list(weights.prostate_by_site)
    header_cells = ["teacher", "all pixels", "prostate", *(f"prostate, {site}" for site in sites)]
    rows = [
        [name, number(weights.all_pixels[k], 3), number(weights.prostate[k], 3),
         *(number(weights.prostate_by_site[site][k], 3) for site in sites)]
        for k, name in enumerate(weights.teachers)
    ]
    return Table(header_cells, rows)


def split_note(test_cases: list[dict[str, Any]]) -> str:
    """``"8 cases (SiteA 2, SiteB 2, ...)"``."""
    per_site = Counter(case.get("site", "unknown") for case in test_cases)
    return f"{len(test_cases)} cases ({', '.join(f'{site} {n}' for site, n in sorted(per_site.items()))})"


def latency_setup(experiment: Experiment) -> str:
    """The measured input shapes and thread counts, from the first seeds' ``efficiency.json``."""
    records = [experiment.efficiency(experiment.first_seed(g["group"])) for g in experiment.groups]
    shapes = sorted({"×".join(map(str, r["slice_input"])) for r in records})
    threads = sorted({str(r["threads"]) for r in records})
    return f"input {' / '.join(shapes)}, {' / '.join(threads)} thread(s)"


def spread(group: dict[str, Any]) -> str:
    n = group["overall"]["dice"].get("n")
    return group["sd_over"] if n is None else f"{group['sd_over']} (n={n})"


def mean_sd(stats: dict[str, float] | None, digits: int) -> str:
    if stats is None or stats.get("mean") is None:
        return MISSING
    return f"{stats['mean']:.{digits}f} ± {stats.get('sd') or 0.0:.{digits}f}"


def number(value: float | None, digits: int) -> str:
    return MISSING if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def milliseconds(value: float | None) -> str:
    return number(value, 2 if value is not None and value < 10 else 1)


def minutes(value: float | None) -> str:
    return number(value, 2 if value is not None and value < 1 else 1)


def count(value: float | None) -> str:
    """``412345`` → ``"0.41 M"``; ``1.2e9`` → ``"1.20 G"``."""
    if value is None:
        return MISSING
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= 0.1 * scale:
            return f"{value / scale:.2f} {suffix}"
    return f"{value:.0f}"


def file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
