"""What the report says, section by section, built from an experiment folder:

1. summary: the verdict (each distilled student against its baseline and best teacher, the best model, each
   change judged against the spread over seeds, or over paired test cases for one seed) and what was compared
   (models, teachers, labeled cases, seeds, budgets); then experiment, data, date, git hash, versions, hardware;
2. results per group (mean ± sd, over seeds or cases as stated; size and latency), test Dice per site, and
   each distilled student against its baseline and its best teacher;
3. training curves; 4. Dice versus CPU latency with the Pareto front; 5. per-site Dice bars;
6. for the groups evaluated under the field-of-view shifts: their Dice per shift, table and curves;
7. qualitative overlays of the best, median and worst test case;
8. for multi-teacher students: the teachers' mean aggregation weights and their disagreement;
9. each teacher's calibration on its validation cases: temperature, NLL and ECE, reliability diagrams.

Captions say what each figure shows and on how many test cases.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np

from prokd.config import load_config
from prokd.eval.calibration import run_calibration
from prokd.experiment.results import (
    COMPARISON_NOTE,
    FIELD_OF_VIEW_NOTE,
    MISSING,
    OWN_SITE_NOTE,
    accuracy_table,
    comparison_table,
    field_of_view_ceilings,
    field_of_view_dice,
    field_of_view_table,
    format_stats,
    own_site_table,
)
from prokd.experiment.results import latency_note, models_table, speed_table, verdict_lines
from prokd.report.blocks import Block, Bullets, Facts, Heading, Paragraph, Plot, Table
from prokd.report.figures import Colour, Curve, GroupPoint, dice_latency, group_colours, pareto_front
from prokd.report.figures import field_of_view_curves, reliability_diagrams, site_dice_bars, training_curves
from prokd.report.folder import Experiment
from prokd.report.overlays import CONTOUR_NOTE, HEAT_TRUTH_NOTE, SliceView, VolumePredictions, disagreement_figure
from prokd.report.overlays import overlay_figure, select_cases, slice_view
from prokd.report.weights import TeacherWeights, teacher_weights

__all__ = ["report_blocks"]

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
    config = load_config(experiment.run_dir(ranking) / "config.yaml")
    predictions = VolumePredictions(experiment.data, config.label_map, config.preprocess.channel)
    picks = select_cases({case["case"]: case["dice"] for case in test_cases})
    views = [slice_view(pick, predictions.case(case)) for pick, case in picks]
    title = f"prokd report: {experiment.name}"
    return title, [
        Heading(title, 1),
        *summary(experiment, test_cases),
        *header(experiment),
        *results(experiment, test_cases),
        *curves(experiment, colours),
        *accuracy_latency(experiment, colours, len(test_cases)),
        *site_bars(experiment, colours, test_cases),
        *field_of_view(experiment, colours),
        *overlays(experiment, predictions, views, ranking, len(test_cases)),
        *teachers(experiment, predictions, views),
        *calibration(experiment),
    ]


def summary(experiment: Experiment, test_cases: list[dict[str, Any]]) -> list[Block]:
    """The verdict, then what was compared."""
    kinds = Counter(group["kind"] for group in experiment.groups)
    seeds = sorted({row["seed"] for row in experiment.rows})
    compared = (
        f"Compared: {kinds['teacher']} teacher and {kinds['student']} student groups (a group is one recipe over "
        f"its seeds), all tested on the same {split_note(test_cases)}; seeds used: {', '.join(map(str, seeds))}. "
        "Dice differences are in Dice points (Dice × 100). Labeled cases: the training cases whose labels a model "
        "learnt from. Teachers: the one a student distils from, or how many and how they are aggregated. Slices / "
        "step: the batch size, and how many of its slices come from images without labels on average."
    )
    verdict = verdict_lines({"groups": experiment.groups, "comparisons": experiment.comparisons})
    return [Heading("Summary"), Bullets(verdict), Paragraph(compared), Table(*models_table(experiment.groups))]


def header(experiment: Experiment) -> list[Block]:
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
    return [Heading("Run"), Facts(facts)]


def results(experiment: Experiment, test_cases: list[dict[str, Any]]) -> list[Block]:
    accuracy_header, accuracy_rows = accuracy_table({"rows": experiment.rows, "groups": experiment.groups})
    speed_header, speed_rows = speed_table(experiment.groups)
    header_cells = [*accuracy_header, *speed_header[1:]]
    rows = [[*accuracy, *speed[1:]] for accuracy, speed in zip(accuracy_rows, speed_rows)]
    sites = experiment.sites()
    site_rows = [
        [group["group"], *(format_stats(group["sites"].get(site, {}).get("dice")) for site in sites)]
        for group in experiment.groups
    ]
    note = (
        f"Test split: {split_note(test_cases)}. Dice, IoU, HD95 and ASSD are 3D metrics per test case. A group's "
        "value is the mean ± sd over its seeds of each seed's mean over the test cases ('± over: 3 seeds'); a group "
        "with one seed shows mean ± sd over the test cases instead ('± over: 8 cases'). '(n = 1)': a single value, "
        "so no spread. val Dice: the best checkpoint's Dice on the validation cases, what a recipe is chosen by "
        "(mean over seeds). Params, MACs (one forward pass on one slice) and latencies are means over the "
        f"group's seeds. {latency_note(experiment.latency)}"
    )
    blocks = [
        Heading("Results"),
        Paragraph(note),
        Table(header_cells, rows),
        Heading("Test Dice per site", 3),
        Table(["group", *sites], site_rows),
    ]
    own_site = own_site_table(experiment.groups)
    if own_site[1]:
        blocks += [Heading("Own site and other sites", 3), Paragraph(OWN_SITE_NOTE), Table(*own_site)]
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
    if any(group["latency_slice_ms"] is None for group in groups):
        return [Heading("Accuracy versus CPU latency"), Paragraph(latency_note(None))]
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
    single = np.array([[s is None or s.get("n", 2) < 2 for s in row] for row in stats])
    sd[single] = np.nan
    caption = (
        f"Test Dice per site and group: bars are means, error bars sd over seeds (or over the site's test cases for "
        f"single-seed groups; no error bar where there is a single value, n = 1). Test cases: {split_note(test_cases)}."
    )
    return [Heading("Dice per site"), Plot("site_dice", site_dice_bars(names, sites, mean, sd, colours), caption)]


def field_of_view(experiment: Experiment, colours: dict[str, Colour]) -> list[Block]:
    """The groups evaluated under the field-of-view shifts (none: no section): their Dice per shift and largest
    drop, and the Dice against the shift, one line per group."""
    header_cells, rows = field_of_view_table(experiment.groups)
    if not rows:
        return []
    caption = (
        "Mean 3D test Dice (over the test cases and seeds) against the shift: left the field of view, cropped to 0.6x "
        "or padded to 1.5x and 2x; right the in-plane resolution, 0.5x and 2x the pixels per axis; the original in "
        "both. One line per group evaluated under the shifts, in its colour; grey and dashed, the ceiling: the label "
        "itself shifted and mapped back."
    )
    figure = field_of_view_curves(field_of_view_dice(experiment.groups), field_of_view_ceilings(experiment.groups),
                                  colours)
    return [
        Heading("Field of view"),
        Paragraph(FIELD_OF_VIEW_NOTE),
        Table(header_cells, rows),
        Plot("field_of_view", figure, caption),
    ]


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
        "the image, the ground truth, then each group's first-seed prediction (best checkpoint, post-processed mask; "
        f"ground truth thin), titled with that model's 3D Dice on the whole case. {CONTOUR_NOTE} Click the figure "
        "to open it at full size."
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
            f"sd over the {len(runs)} teachers (0: all agree; 0.5: an even split between certain teachers), with "
            f"their colour bars below. {HEAT_TRUTH_NOTE}"
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


def calibration(experiment: Experiment) -> list[Block]:
    """Each teacher group's first seed: its temperature fitted on its validation cases and what it changes."""
    rows = [experiment.first_seed(group["group"]) for group in experiment.groups if group["kind"] == "teacher"]
    if not rows:
        return []
    fitted = [run_calibration(experiment.run_dir(row), experiment.data) for row in rows]
    names = [row["stage"] for row in rows]
    table = Table(
        ["teacher", "val cases", "temperature", "NLL at T = 1", "NLL fitted", "ECE at T = 1", "ECE fitted"],
        [[name, str(len(c.cases)), f"{c.temperature:.3f}", f"{c.nll_before:.4f}", f"{c.nll_after:.4f}",
          f"{c.before.ece:.4f}", f"{c.after.ece:.4f}"] for name, c in zip(names, fitted)],
    )
    caption = (
        "Reliability of each teacher's foreground probability on the gland slices of its validation cases (slices "
        "where the label or the prediction has foreground): per probability bin, the share of voxels that are "
        "prostate against the bin's mean probability; on the diagonal a probability means what it says. A "
        "temperature above 1 softens an over-confident teacher, below 1 sharpens an under-confident one; masks "
        "do not change. Students distilled with distill.calibrate use these temperatures."
    )
    return [
        Heading("Teacher calibration"),
        Paragraph("Temperature scaling (Guo et al., ICML 2017), fitted on each teacher's validation cases (cases "
                  "it never trained on) and written to its RUN/calibration.json."),
        table,
        Plot("calibration", reliability_diagrams(names, fitted), caption),
    ]


def weights_note(stage: str, weights: TeacherWeights, n_cases: int) -> str:
    return (
        f"Mean aggregation weight of each teacher of {stage} on its {n_cases} test cases: every slice on the "
        f"student's grid, the teachers' probabilities softened at the distillation temperature, weighed by the "
        f"student's aggregator without the label (as on an unlabeled image). 'all pixels' averages every pixel "
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
    """The measured input shapes, thread counts and repeats, from the first seeds' ``efficiency.json``."""
    records = [experiment.efficiency(experiment.first_seed(g["group"])) for g in experiment.groups]
    shapes = sorted({"×".join(map(str, r["slice_input"])) for r in records})
    threads = sorted({str(r["threads"]) for r in records})
    repeats = sorted({str(r["repeats"]) for r in records if "repeats" in r})
    timed = f"; median of {' / '.join(repeats)} repeats per model, all models timed in one pass" if repeats else ""
    return f"input {' / '.join(shapes)}, {' / '.join(threads)} thread(s){timed}"


def number(value: float | None, digits: int) -> str:
    return MISSING if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def milliseconds(value: float | None) -> str:
    return number(value, 2 if value is not None and value < 10 else 1)


def file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
