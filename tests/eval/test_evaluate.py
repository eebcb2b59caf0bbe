"""The evaluation tables read at 80 columns: every site and case whole, no cut cell."""

from __future__ import annotations

import io

from rich.console import Console

from prokd.eval.evaluate import METRICS, Evaluation, print_cases, summary_table
from prokd.eval.metrics import summarize

SITES = ["Radboud-University-Nijmegen", "BIDMC", "University-College-London"]


def evaluation() -> Evaluation:
    rows = [
        {"case": f"{site}-case{i:03d}", "site": site, "dice": 0.8 + 0.01 * i, "iou": 0.7, "hd95": 123.456 + i,
         "assd": 12.3, "distance_unit": "mm"}
        for site in SITES for i in range(3)
    ]
    return Evaluation("test", rows, summarize(rows, metrics=METRICS, by="site"))


def test_summary_table_at_80_columns(assert_readable):
    console = Console(width=80, file=io.StringIO())
    console.print(summary_table(evaluation(), title="runs/student-mkd-adaptive-seed0 — test split"))
    text = console.file.getvalue()
    assert_readable(text, [*SITES, "overall"])
    assert text.count("124.456 ± 1.000") == len(SITES)  # each site's HD95 cell whole


def test_per_case_table_at_80_columns(assert_readable):
    console = Console(width=80, file=io.StringIO())
    print_cases(evaluation(), console)
    text = console.file.getvalue()
    assert_readable(text, [row["case"] for row in evaluation().rows])
    assert text.count("124.456") == len(SITES)
