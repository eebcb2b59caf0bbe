"""Results from hand-made stage outputs: rows, mean ± sd over seeds, stale or missing evaluations, CSV and Markdown;
the verdict in words."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from prokd.experiment.results import (
    collect_results,
    compare_students,
    comparison_line,
    comparison_table,
    field_of_view_table,
    format_stats,
    group_rows,
    mean_sd,
    own_site_table,
    results_markdown,
    slices_per_step,
    slices_text,
    stage_row,
    verdict_lines,
    write_results,
)

ROW_KEYS = {"stage", "group", "kind", "model", "seed", "run", "teachers", "aggregate", "baseline", "labeled", "site",
            "labeled_cases", "budget", "params", "macs", "latency_slice_ms", "latency_volume_ms", "train_minutes",
            "steps", "slices", "distance_unit", "overall", "sites", "case_dice", "teachers_ensemble",
            "teachers_dice", "val_dice", "field_of_view"}
GROUP_KEYS = {"group", "kind", "model", "seeds", "labeled_cases", "budget", "slices", "teachers", "aggregate", "steps",
              "site",
              "params",
              "macs", "latency_slice_ms", "latency_volume_ms", "train_minutes", "overall", "sites", "sd_over",
              "case_dice", "val_dice", "field_of_view"}
TRAIN_CASES = 12
SHIFT_NAMES = ("crop 0.6x", "original", "pad 1.5x", "pad 2x", "resample 0.5x", "resample 2x")


def stats(dice: float, n: int) -> dict[str, dict[str, float]]:
    """One summary entry: IoU, HD95 and ASSD derived from the Dice so that each is checkable."""
    values = {"dice": dice, "iou": dice - 0.1, "hd95": 10 * dice, "assd": dice / 2}
    return {metric: {"mean": value, "sd": 0.05, "n": n} for metric, value in values.items()}


def summary(overall: float, site_a: float, site_b: float) -> dict[str, Any]:
    return {"SiteA": stats(site_a, 2), "SiteB": stats(site_b, 2), "overall": stats(overall, 4)}


STAGES = [  # (plan entry, summary, efficiency, last metrics.jsonl record)
    ({"stage": "teacher-full-seed0", "group": "teacher-full", "kind": "teacher", "model": "unet-large", "seed": 0},
     summary(0.90, 0.85, 0.95), {"params": 6_500_000, "macs": 2_000_000_000, "latency_slice_ms": 30.0,
                                 "latency_volume_ms": 900.0}, {"step": 100, "elapsed_seconds": 120.0}),
    ({"stage": "student-kd-seed0", "group": "student-kd", "kind": "student", "model": "unet-small", "seed": 0,
      "teachers": ["teacher-full-seed0"], "aggregate": "mean"},
     summary(0.80, 0.70, 0.90), {"params": 400_000, "macs": 48_000_000, "latency_slice_ms": 10.0,
                                 "latency_volume_ms": 300.0}, {"step": 50, "elapsed_seconds": 60.0}),
    ({"stage": "student-kd-seed1", "group": "student-kd", "kind": "student", "model": "unet-small", "seed": 1,
      "teachers": ["teacher-full-seed0"], "aggregate": "mean"},
     summary(0.86, 0.80, 0.92), {"params": 400_000, "macs": 48_000_000, "latency_slice_ms": 12.0,
                                 "latency_volume_ms": 500.0}, {"step": 50, "elapsed_seconds": 90.0}),
]


def plan_entry(partial: dict[str, Any]) -> dict[str, Any]:
    return {"teachers": [], "aggregate": None, "labeled": None, "budget": {"steps": 50, "minutes": None},
            "run": f"runs/{partial['stage']}", **partial}


def make_rows() -> list[dict[str, Any]]:
    return [stage_row(plan_entry(stage), summary_, facts, log, "px", TRAIN_CASES, {"batch": 8, "unlabeled": 0.0})
            for stage, summary_, facts, log in STAGES]


def test_rows_and_groups_against_hand_computed_values():
    rows = make_rows()
    assert all(set(row) == ROW_KEYS for row in rows)
    assert (rows[0]["train_minutes"], rows[0]["steps"], rows[0]["distance_unit"]) == (2.0, 100, "px")
    assert (rows[0]["labeled_cases"], rows[0]["labeled"]) == (12, None)
    assert rows[0]["budget"] == {"steps": 50, "minutes": None}
    assert rows[1]["overall"]["dice"] == {"mean": 0.80, "sd": 0.05, "n": 4}
    assert rows[1]["teachers"] == ["teacher-full-seed0"]
    assert rows[2]["sites"]["SiteB"]["hd95"]["mean"] == pytest.approx(9.2)

    teacher, kd = group_rows(rows)
    assert all(set(group) == GROUP_KEYS for group in (teacher, kd))
    # one seed: the row's own mean ± sd over its test cases
    assert teacher["sd_over"] == "cases" and teacher["seeds"] == [0]
    assert teacher["overall"]["dice"] == {"mean": 0.90, "sd": 0.05, "n": 4}
    assert teacher["sites"]["SiteA"]["dice"] == {"mean": 0.85, "sd": 0.05, "n": 2}
    # two seeds: mean and sample sd (ddof=1) of the two seeds' case means
    assert kd["sd_over"] == "seeds" and kd["seeds"] == [0, 1] and (kd["kind"], kd["model"]) == ("student", "unet-small")
    assert kd["overall"]["dice"] == pytest.approx({"mean": 0.83, "sd": 0.06 / 2**0.5, "n": 2})
    assert kd["overall"]["iou"]["mean"] == pytest.approx(0.73) and kd["overall"]["hd95"]["mean"] == pytest.approx(8.3)
    assert kd["sites"]["SiteA"]["dice"] == pytest.approx({"mean": 0.75, "sd": 0.1 / 2**0.5, "n": 2})
    assert kd["sites"]["SiteB"]["dice"] == pytest.approx({"mean": 0.91, "sd": 0.02 / 2**0.5, "n": 2})
    assert (kd["params"], kd["macs"]) == (400_000, 48_000_000)
    assert (kd["latency_slice_ms"], kd["latency_volume_ms"], kd["train_minutes"]) == pytest.approx((11.0, 400.0, 1.25))
    assert (kd["steps"], kd["labeled_cases"], teacher["steps"]) == (50, 12, 100)


def test_rows_before_the_latency_is_measured_have_no_efficiency():
    row = stage_row(plan_entry(STAGES[0][0]), STAGES[0][1], None, {"step": 7, "elapsed_seconds": 6.0}, "mm", 3)
    assert all(row[key] is None for key in ("params", "macs", "latency_slice_ms", "latency_volume_ms"))
    (group,) = group_rows([row])
    assert group["params"] is None and group["latency_slice_ms"] is None and group["steps"] == 7
    markdown = results_markdown({"experiment": "x", "rows": [row], "groups": [group], "latency": None})
    assert "| teacher-full | – | – | – | – |" in markdown and "Latency: not measured yet" in markdown


def scratch_row(seed: int, dice: float) -> dict[str, Any]:
    entry = {"stage": f"student-scratch-seed{seed}", "group": "student-scratch", "kind": "student",
             "model": "unet-small", "seed": seed}
    facts = {"params": 400_000, "macs": 48_000_000, "latency_slice_ms": 10.0, "latency_volume_ms": 300.0}
    return stage_row(plan_entry(entry), summary(dice, dice, dice), facts, {"step": 50, "elapsed_seconds": 60.0}, "px",
                     TRAIN_CASES)


def test_distilled_students_are_compared_with_their_baseline_and_best_teacher():
    rows = [*make_rows(), scratch_row(0, 0.70), scratch_row(1, 0.74)]
    for row in rows[1:3]:
        row["baseline"] = "student-scratch"
    (comparison,) = compare_students(rows)
    assert comparison["group"] == "student-kd" and comparison["baseline"] == "student-scratch"
    assert (comparison["teachers"], comparison["labeled"]) == (1, None)
    assert comparison["dice"] == pytest.approx({"mean": 0.83, "sd": 0.06 / 2**0.5, "n": 2})
    assert comparison["baseline_dice"] == pytest.approx({"mean": 0.72, "sd": 0.04 / 2**0.5, "n": 2})
    assert comparison["change_points"] == pytest.approx(11.0)
    assert comparison["beyond_spread"] is True  # 11 points against sds of 4.2 and 2.8 points
    assert comparison["best_teacher"] == "teacher-full-seed0" and comparison["best_teacher_dice"] == 0.90
    assert comparison["teacher_gap_points"] == pytest.approx(-7.0)
    markdown = results_markdown({"experiment": "x", "rows": rows, "groups": group_rows(rows), "comparisons": [comparison]})
    assert ("| student-kd | 0.830 ± 0.042 | student-scratch | 0.720 ± 0.028 | +11.0 | yes | teacher-full-seed0 "
            "| 0.900 | -7.0 |") in markdown

    rows[4]["overall"]["dice"]["mean"] = 0.90  # scratch seeds 0.70 and 0.90: sd 14 points > the 11-point change
    assert compare_students(rows)[0]["beyond_spread"] is False
    (one_seed,) = compare_students(rows[:2] + rows[3:4])
    assert one_seed["change_points"] == pytest.approx(10.0) and one_seed["beyond_spread"] is None
    (no_baseline,) = compare_students(make_rows())
    assert no_baseline["baseline"] is None and no_baseline["change_points"] is None
    assert no_baseline["beyond_spread"] is None and no_baseline["teacher_gap_points"] == pytest.approx(-7.0)


def one_seed_row(group: str, case_dice: dict[str, float], **extra: Any) -> dict[str, Any]:
    entry = {"stage": f"{group}-seed0", "group": group, "kind": "student", "model": "unet-small", "seed": 0, **extra}
    mean = sum(case_dice.values()) / len(case_dice)
    return stage_row(plan_entry(entry), summary(mean, mean, mean), None, {"step": 50, "elapsed_seconds": 60.0}, "mm",
                     TRAIN_CASES, None, case_dice)


def test_one_seed_each_is_judged_by_the_paired_differences_over_the_same_test_cases():
    cases = ["c0", "c1", "c2", "c3"]
    student = dict(zip(cases, [0.90, 0.80, 0.85, 0.95]))
    teacher = one_seed_row("teacher-full", dict(zip(cases, [0.95] * 4)), kind="teacher")

    def comparison(baseline: dict[str, float]) -> dict[str, Any]:
        rows = [teacher, one_seed_row("student-kd", student, teachers=["teacher-full-seed0"]),
                one_seed_row("student-scratch", baseline)]
        rows[1]["baseline"] = "student-scratch"
        (result,) = compare_students(rows)
        return result

    # differences 5, 2, 5, 5 points: mean 4.25, sd 1.5, t(0.975, 3 df) = 3.1824 -> half width 2.387
    clear = comparison(dict(zip(cases, [0.85, 0.78, 0.80, 0.90])))
    assert clear["spread"] == pytest.approx({"over": "cases", "beyond": True, "n": 4, "low": 1.863, "high": 6.637},
                                            abs=1e-3)
    assert clear["beyond_spread"] is True and clear["change_points"] == pytest.approx(4.25)
    assert ("student-kd vs student-scratch: +4.3 Dice points (larger than the case spread: paired 95 % interval "
            "+1.9 to +6.6 points over 4 test cases)") in comparison_line(clear)
    # differences 2, -2, 1, -1 points: the interval holds 0
    tie = comparison(dict(zip(cases, [0.88, 0.82, 0.84, 0.96])))
    assert tie["spread"]["over"] == "cases" and tie["beyond_spread"] is False
    assert "(within the case spread: paired 95 % interval" in comparison_line(tie)
    # other test cases: nothing to pair
    other = comparison({"c0": 0.85, "c1": 0.78, "c2": 0.80, "c9": 0.90})
    assert other["spread"] is None and other["beyond_spread"] is None
    # the best model's lead is judged the same way
    groups = group_rows([teacher, one_seed_row("student-kd", student)])
    assert verdict_lines({"groups": groups})[0].endswith(
        "ahead of student-kd (within the case spread: paired 95 % interval -2.8 to +17.8 points over 4 test cases)")


def test_mean_sd_formatting_shows_n_1_instead_of_a_zero_spread():
    assert mean_sd([0.8, 0.9]) == "0.850 ± 0.071"
    assert mean_sd([0.5]) == "0.500 (n = 1)"
    assert mean_sd([]) == "–"
    assert format_stats({"mean": 12.345, "sd": 0.0, "n": 1}, 1) == "12.3 (n = 1)"
    assert format_stats({"mean": 0.8, "sd": 0.0, "n": 3}) == "0.800 ± 0.000"  # three equal values: a real zero sd
    assert format_stats(None) == "–"


def write_stage(out: Path, stage: dict[str, Any], summary_: dict, facts: dict, log: dict, evaluated_at: int) -> None:
    """A stage's files as the runner leaves them; ``best.pt`` is dated 1000 s, the evaluation ``evaluated_at``."""
    run = out / stage["run"]
    (run / "checkpoints").mkdir(parents=True)
    (run / "eval" / "test").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {"batch_size": 8}, "distill": None}))
    first = {"epoch": 1, "step": 1, "elapsed_seconds": 1.0, "val_dice": 0.61}
    middle = {"epoch": 2, "step": 2, "elapsed_seconds": 2.0, "val_dice": 0.64}  # the best checkpoint's
    (run / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in (first, middle, log)))
    (run / "eval" / "test" / "cases.csv").write_text("case,site,dice,distance_unit\nc1,SiteA,0.8,px\n")
    (run / "eval" / "test" / "summary.json").write_text(json.dumps({"split": "test", "summary": summary_}))
    train = [f"c{i}" for i in range(TRAIN_CASES)]
    (run / "split.json").write_text(json.dumps({"train": train, "val": ["v1"], "test": ["c1"]}))
    facts = {**facts, "slice_input": [1, 3, 160, 160], "volume_slices": 20, "threads": 2, "repeats": 30,
             "volume_repeats": 3}
    (run / "efficiency.json").write_text(json.dumps(facts))
    os.utime(run / "checkpoints" / "best.pt", (1000, 1000))
    for name in ("eval/test/summary.json", "efficiency.json"):
        os.utime(run / name, (evaluated_at, evaluated_at))


def test_collect_and_write_results_from_a_folder(tmp_path):
    out = tmp_path / "exp"
    plan = [plan_entry(stage) for stage, *_ in STAGES]
    stale = plan_entry({"stage": "student-scratch-seed0", "group": "student-scratch", "kind": "student",
                        "model": "unet-small", "seed": 0})
    pending = {**stale, "stage": "student-scratch-seed1", "seed": 1, "run": "runs/student-scratch-seed1"}
    out.mkdir()
    (out / "experiment.yaml").write_text(yaml.safe_dump({"name": "hand"}))
    (out / "plan.json").write_text(json.dumps([*plan, stale, pending]))
    for entry, (_, summary_, facts, log) in zip(plan, STAGES):
        write_stage(out, entry, summary_, facts, log, evaluated_at=2000)
    write_stage(out, stale, *STAGES[1][1:], evaluated_at=500)  # evaluated before its best checkpoint was replaced
    curve = field_of_view_summary([0.70, 0.876, 0.788, 0.397, 0.862, 0.875])
    for entry, evaluated_at in ((plan[0], 2000), (plan[1], 500)):  # the student's is older than its checkpoint
        stored = out / entry["run"] / "eval" / "field-of-view" / "summary.json"
        stored.parent.mkdir()
        stored.write_text(json.dumps({"split": "test", "summary": curve}))
        os.utime(stored, (evaluated_at, evaluated_at))

    results = collect_results(out)
    assert results["experiment"] == "hand" and "torch" in results["env"]
    expected = [{**row, "case_dice": {"c1": 0.8}, "val_dice": 0.64} for row in make_rows()]  # cases.csv, metrics
    expected[0]["field_of_view"] = {shift: {"dice": s["dice"]["mean"], "ceiling": 1.0} for shift, s in curve.items()}
    assert results["rows"] == expected  # the stale and the pending stage are left out
    assert results["latency"] == {"threads": 2, "repeats": 30, "volume_repeats": 3}
    assert [group["group"] for group in results["groups"]] == ["teacher-full", "student-kd"]

    markdown = write_results(out, results)
    assert json.loads((out / "results" / "results.json").read_text()) == results
    with (out / "results" / "results.csv").open() as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["stage", "group", "kind", "model", "seed", "labeled_cases", "steps", "params", "macs",
                        "latency_slice_ms", "latency_volume_ms", "train_minutes", "dice", "dice_sd", "iou", "hd95",
                        "assd", "dice_SiteA", "dice_SiteB"]
    assert lines[2] == ["student-kd-seed0", "student-kd", "student", "unet-small", "0", "12", "50", "400000",
                        "48000000", "10.0", "300.0", "1.0", "0.8", "0.05", str(0.8 - 0.1), "8.0", "0.4", "0.7", "0.9"]
    text = markdown.read_text()
    assert "| student-kd | unet-small | teacher-full-seed0 | 12 | 2 | 50 steps | 50 | 8 | 1.2 |" in text  # seeds: 2
    assert "| teacher-full | unet-large | – | 12 | 1 | 50 steps | 100 | 8 | 2.0 |" in text
    assert "| student-kd | 0.640 | 0.830 ± 0.042 | 0.730 ± 0.042 | 8.30 ± 0.42 | 0.42 ± 0.02 | 2 seeds |" in text
    assert "| teacher-full | 0.640 | 0.900 ± 0.050 | 0.800 ± 0.050 | 9.00 ± 0.05 | 0.45 ± 0.05 | 4 cases |" in text
    assert "| student-kd | 0.40 M | 48.0 M | 11.0 ms | 400 ms |" in text
    assert "| teacher-full | 6.50 M | 2.00 G | 30.0 ms | 900 ms |" in text
    assert "(30 repeats per model)" in text and "(3 repeats), 2 thread(s)" in text and "HD95 (px)" in text
    assert "| group | SiteA | SiteB |" in text and "| student-kd | 0.750 ± 0.071 | 0.910 ± 0.014 |" in text
    assert text.index("## Verdict") < text.index("## Models") and "- Best model overall: teacher-full" in text


def test_markdown_before_any_stage_is_evaluated(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.yaml").write_text(yaml.safe_dump({"name": "empty"}))
    (out / "plan.json").write_text(json.dumps([plan_entry(STAGES[0][0])]))
    results = collect_results(out)
    assert results["rows"] == [] and results["groups"] == []
    assert "No stage has been evaluated yet." in write_results(out, results).read_text()


def hand_group(name: str, kind: str, dice: float, sd: float, seeds: int) -> dict[str, Any]:
    """A GROUP as far as the verdict reads it; one seed keeps its sd over 8 test cases."""
    return {"group": name, "kind": kind, "model": "unet-small", "seeds": list(range(seeds)),
            "overall": {"dice": {"mean": dice, "sd": sd, "n": seeds if seeds > 1 else 8}},
            "sd_over": "seeds" if seeds > 1 else "cases"}


NO_SPREAD = "(no spread to judge it by: one seed against several, or different test cases)"


def hand_comparison(group: str, dice: dict, baseline: str | None, baseline_dice: dict | None, beyond: bool | None,
                    teachers: int = 1, labeled: int | None = None) -> dict[str, Any]:
    change = 100 * (dice["mean"] - baseline_dice["mean"]) if baseline_dice else None
    spread = None if beyond is None else {"over": "seeds", "beyond": beyond, "sd": [dice["sd"], baseline_dice["sd"]]}
    return {"group": group, "teachers": teachers, "labeled": labeled, "dice": dice, "baseline": baseline,
            "baseline_dice": baseline_dice, "change_points": change, "spread": spread, "beyond_spread": beyond,
            "best_teacher": "teacher-full-seed0", "best_teacher_dice": 0.85,
            "teacher_gap_points": 100 * (dice["mean"] - 0.85)}


def test_verdict_lines_say_whether_a_change_exceeds_the_seed_spread():
    kd = {"mean": 0.831, "sd": 0.008, "n": 3}
    scratch = {"mean": 0.800, "sd": 0.011, "n": 3}
    noisy = {"mean": 0.810, "sd": 0.020, "n": 3}
    mkd, scratch4 = {"mean": 0.62, "sd": 0.0, "n": 1}, {"mean": 0.50, "sd": 0.0, "n": 1}
    results = {
        "groups": [hand_group("teacher-full", "teacher", 0.85, 0.05, 1),
                   hand_group("student-scratch", "student", 0.80, 0.011, 3),
                   hand_group("student-kd", "student", 0.831, 0.008, 3)],
        "comparisons": [
            hand_comparison("student-kd", kd, "student-scratch", scratch, True),
            hand_comparison("student-kd-noisy", noisy, "student-scratch", scratch, False),
            hand_comparison("student-mkd-adaptive", mkd, "student-scratch4", scratch4, None, teachers=4, labeled=4),
            hand_comparison("student-alone", kd, None, None, None),
        ],
    }
    lines = verdict_lines(results)
    assert lines[:4] == [
        "student-kd vs student-scratch: +3.1 Dice points (larger than the seed spread: sd 0.8 and 1.1 points); "
        "vs its teacher teacher-full-seed0: -1.9 points",
        "student-kd-noisy vs student-scratch: +1.0 Dice points (within the seed spread: sd 2.0 and 1.1 points); "
        "vs its teacher teacher-full-seed0: -4.0 points",
        "student-mkd-adaptive (4 labeled cases) vs student-scratch4 with the same 4 labeled cases: +12.0 Dice points "
        f"{NO_SPREAD}; vs its best teacher teacher-full-seed0: -23.0 points",
        "student-alone: no student trained on the same cases without teachers to compare with; "
        "vs its teacher teacher-full-seed0: -1.9 points",
    ]
    # a one-seed teacher is best: its sd over test cases is not a seed spread
    assert lines[4] == ("Best model overall: teacher-full (unet-small), Dice 0.850 (one seed); 1.9 Dice points "
                        f"ahead of student-kd {NO_SPREAD}")
    assert lines[5] == ("Best student: student-kd (unet-small), Dice 0.831 ± 0.008 (mean ± sd over 3 seeds); "
                        f"1.9 Dice points behind teacher-full {NO_SPREAD}")
    assert len(lines) == 6
    tie = hand_comparison("student-tie", {"mean": 0.8, "sd": 0.01, "n": 2}, "student-scratch",
                          {"mean": 0.8004, "sd": 0.01, "n": 2}, False)
    assert "student-tie vs student-scratch: +0.0 Dice points (within the seed spread" in verdict_lines(
        {"groups": results["groups"], "comparisons": [tie]})[0]


def test_verdict_names_the_best_model_and_judges_its_lead_by_the_seed_spread():
    close = [hand_group("student-kd", "student", 0.84, 0.02, 3),
             hand_group("student-scratch", "student", 0.83, 0.01, 3)]
    assert verdict_lines({"groups": close, "comparisons": []}) == [
        "Best model overall: student-kd (unet-small), Dice 0.840 ± 0.020 (mean ± sd over 3 seeds); 1.0 Dice points "
        "ahead of student-scratch (within the seed spread: sd 2.0 and 1.0 points)"
    ]
    clear = [close[0], hand_group("student-scratch", "student", 0.78, 0.01, 3)]
    lead = verdict_lines({"groups": clear})[0]
    assert "6.0 Dice points ahead of student-scratch (larger than the seed spread" in lead
    assert verdict_lines({"groups": [], "comparisons": []}) == []


def test_slices_per_step_count_the_batch_and_its_unlabeled_share(tmp_path):
    plain, distilled, label_free = tmp_path / "plain", tmp_path / "distilled", tmp_path / "label-free"
    for run, config in ((plain, {"train": {"batch_size": 8}, "distill": None}),
                        (distilled, {"train": {"batch_size": 12}, "distill": {"unlabeled_fraction": 0.3333}}),
                        (label_free, {"train": {"batch_size": 8}, "distill": {"no_labels": True}})):
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert slices_per_step(plain) == {"batch": 8, "unlabeled": 0.0}
    assert slices_per_step(label_free) == {"batch": 8, "unlabeled": 8.0}
    assert slices_per_step(distilled) == pytest.approx({"batch": 12, "unlabeled": 4.0}, abs=1e-3)
    assert (slices_text(slices_per_step(plain)), slices_text(slices_per_step(distilled))) == ("8", "12 (~4 unlab.)")
    row = stage_row(plan_entry(STAGES[0][0]), STAGES[0][1], None, {"step": 7, "elapsed_seconds": 6.0}, "mm", 3,
                    slices_per_step(distilled))
    markdown = results_markdown({"experiment": "x", "rows": [row], "groups": group_rows([row]), "latency": None})
    assert "| 7 | 12 (~4 unlab.) |" in markdown


def test_a_student_with_its_teachers_ensemble_evaluated_is_compared_with_it_too():
    cases = {"c0": 0.70, "c1": 0.74}
    teachers = [one_seed_row(f"teacher-{site}", {"c0": dice, "c1": dice}, kind="teacher")
                for site, dice in (("a", 0.60), ("b", 0.66))]
    ensemble = summary(0.78, 0.78, 0.78)
    student = stage_row(plan_entry({"stage": "student-c-seed0", "group": "student-c", "kind": "student",
                                    "model": "unet-small", "seed": 0, "teachers": ["teacher-a-seed0", "teacher-b-seed0"],
                                    "aggregate": "adaptive"}),
                        summary(0.72, 0.72, 0.72), None, {"step": 50, "elapsed_seconds": 60.0}, "mm", 0, None, cases,
                        ensemble)
    assert student["teachers_ensemble"]["dice"] == {"mean": 0.78, "sd": 0.05, "n": 4}
    (comparison,) = compare_students([*teachers, student])
    assert comparison["best_teacher"] == "teacher-b-seed0" and comparison["teacher_gap_points"] == pytest.approx(6.0)
    assert comparison["ensemble_dice"] == 0.78 and comparison["ensemble_gap_points"] == pytest.approx(-6.0)
    assert comparison_line(comparison).endswith(
        "; vs its best teacher teacher-b-seed0: +6.0 points; vs its teachers' ensemble: -6.0 points")
    header, (row,) = comparison_table([comparison])
    assert header[-2:] == ["teachers' ensemble", "student − ensemble"] and row[-2:] == ["0.780", "-6.0"]
    (without,) = compare_students(teachers + [{**student, "teachers_ensemble": None}])
    assert without["ensemble_dice"] is None and "ensemble" not in comparison_line(without)
    assert len(comparison_table([without])[0]) == len(header) - 2


def test_teachers_tested_elsewhere_are_compared_on_the_students_cases():
    teachers = [one_seed_row(f"teacher-{site}", {"c0": dice, "c1": dice}, kind="teacher")
                for site, dice in (("a", 0.60), ("b", 0.66))]
    on_student_cases = {"teacher-a-seed0": summary(0.70, 0.70, 0.70), "teacher-b-seed0": summary(0.50, 0.50, 0.50)}
    student = stage_row(plan_entry({"stage": "student-c-seed0", "group": "student-c", "kind": "student",
                                    "model": "unet-small", "seed": 0, "teachers": ["teacher-a-seed0", "teacher-b-seed0"],
                                    "aggregate": "adaptive"}),
                        summary(0.72, 0.72, 0.72), None, {"step": 50, "elapsed_seconds": 60.0}, "mm", 0, None,
                        {"c2": 0.70, "c3": 0.74}, None, on_student_cases)
    assert student["teachers_dice"] == {"teacher-a-seed0": 0.70, "teacher-b-seed0": 0.50}
    (comparison,) = compare_students([*teachers, student])
    assert (comparison["best_teacher"], comparison["best_teacher_dice"]) == ("teacher-a-seed0", 0.70)
    assert comparison["teacher_gap_points"] == pytest.approx(2.0)


def test_groups_tested_on_different_sites_are_ranked_site_by_site():
    def group(name: str, kind: str, dice: float, site: str) -> dict[str, Any]:
        return {**hand_group(name, kind, dice, 0.05, 1), "sites": {site: {}}}

    groups = [group("teacher-others-A", "teacher", 0.70, "A"), group("student-no-labels-A", "student", 0.65, "A"),
              group("student-no-labels-B", "student", 0.80, "B")]
    lines = verdict_lines({"groups": groups, "comparisons": []})
    assert [line.split(":")[0] for line in lines] == [
        "Best model on the test cases of A", "Best student on the test cases of A", "Best model on the test cases of B"]
    assert lines[0].startswith("Best model on the test cases of A: teacher-others-A (unet-small), Dice 0.700")
    assert lines[2] == "Best model on the test cases of B: student-no-labels-B (unet-small), Dice 0.800 (one seed)"


def test_a_teacher_trained_on_one_site_is_scored_there_and_elsewhere():
    def site_stats(mean: float, n: int) -> dict[str, Any]:
        return {"dice": {"mean": mean, "sd": 0.1, "n": n}}

    teacher = {"group": "teacher-site-A", "site": "A",
               "sites": {"A": site_stats(0.80, 2), "B": site_stats(0.50, 2), "C": site_stats(0.20, 1)}}
    student = {"group": "student-x", "site": None, "sites": teacher["sites"]}
    header, rows = own_site_table([teacher, student])
    assert header == ["group", "own site", "Dice there", "Dice elsewhere", "elsewhere − there"]
    assert rows == [["teacher-site-A", "A", "0.800", "0.400", "-40.0"]]  # (2 * 0.5 + 0.2) / 3 over the test cases


def field_of_view_summary(dice: list[float], ceiling: list[float] | None = None) -> dict[str, Any]:
    """A stored field-of-view summary over 4 test cases: Dice and ceiling (1 by default) per shift, in the protocol's
    order: crop 0.6x, original, pad 1.5x, pad 2x, resample 0.5x, resample 2x."""
    return {shift: {"dice": {"mean": d, "sd": 0.02, "n": 4}, "ceiling": {"mean": c, "sd": 0.0, "n": 4}}
            for shift, d, c in zip(SHIFT_NAMES, dice, ceiling or [1.0] * 6)}


def test_the_field_of_view_curve_of_each_group_and_its_largest_drop():
    curves = [  # teacher, student-kd seed 0, seed 1 (as STAGES)
        field_of_view_summary([0.70, 0.876, 0.788, 0.397, 0.862, 0.875], [0.95, 1.0, 1.0, 1.0, 0.972, 1.0]),
        field_of_view_summary([0.79, 0.80, 0.80, 0.79, 0.80, 0.80]),
        field_of_view_summary([0.83, 0.84, 0.84, 0.82, 0.84, 0.84]),
    ]
    rows = [stage_row(plan_entry(stage), summary_, facts, log, "px", TRAIN_CASES, field_of_view=curve)
            for (stage, summary_, facts, log), curve in zip(STAGES, curves)]
    assert rows[0]["field_of_view"]["crop 0.6x"] == {"dice": 0.70, "ceiling": 0.95}
    teacher, kd = group_rows(rows)
    assert teacher["field_of_view"] == rows[0]["field_of_view"]
    assert kd["field_of_view"]["pad 2x"] == pytest.approx({"dice": 0.805, "ceiling": 1.0})  # the mean over seeds
    assert kd["field_of_view"]["crop 0.6x"]["dice"] == pytest.approx(0.81)

    header, table = field_of_view_table([teacher, kd, *group_rows([scratch_row(0, 0.70)])])  # scratch: not evaluated
    assert header == ["group", "original", "crop 0.6x", "pad 1.5x", "pad 2x", "resample 0.5x", "resample 2x",
                      "largest drop", "within 2 points"]
    assert table == [
        ["ceiling: the label itself", "1.000", "0.950", "1.000", "1.000", "0.972", "1.000", "-5.0 (crop 0.6x)", "–"],
        ["teacher-full", "0.876", "0.700", "0.788", "0.397", "0.862", "0.875", "-47.9 (pad 2x)", "no"],
        ["student-kd", "0.820", "0.810", "0.820", "0.805", "0.820", "0.820", "-1.5 (pad 2x)", "yes"],
    ]
    one_seed_evaluated = group_rows([rows[1], {**rows[2], "field_of_view": None}])[0]
    assert one_seed_evaluated["field_of_view"] is None

    markdown = results_markdown({"experiment": "x", "rows": rows, "groups": [teacher, kd], "latency": None})
    section = markdown.split("## Field of view")[1]
    assert "within 2 points of the original at every shift" in section
    assert "| student-kd | 0.820 | 0.810 | 0.820 | 0.805 | 0.820 | 0.820 | -1.5 (pad 2x) | yes |" in section
    plain = group_rows(make_rows())
    assert "## Field of view" not in results_markdown({"experiment": "x", "rows": make_rows(), "groups": plain,
                                                       "latency": None})


def test_groups_tested_on_other_sites_get_their_own_ceiling():
    curve = {"dice": 0.8, "ceiling": 1.0}
    here = {"group": "student-a", "sites": {"SiteA": {}, "SiteB": {}}, "field_of_view": {
        shift: {**curve, "ceiling": 0.9 if shift == "crop 0.6x" else 1.0} for shift in SHIFT_NAMES}}
    there = {"group": "student-d", "sites": {"SiteD": {}}, "field_of_view": {shift: curve for shift in SHIFT_NAMES}}
    _, table = field_of_view_table([here, there])
    assert [row[0] for row in table] == [
        "ceiling: the label itself (SiteA, SiteB)", "ceiling: the label itself (SiteD)", "student-a", "student-d"]
    assert table[0][2] == "0.900" and table[1][2] == "1.000" and table[2][-2:] == ["+0.0 (crop 0.6x)", "yes"]
