"""FittedTable: side by side when the columns fit, else each row's name above its cells, else blocks of pairs;
never a cut cell, never a line wider than the console."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from prokd.table import FittedTable

NAMES = ["student-mkd-adaptive-k6-pseudo-seed0", "teacher-site-RUNMC-seed0", "student-scratch-seed1"]


def render(renderable, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO())
    console.print(renderable)
    return console.file.getvalue()


def plan_like(columns: int = 5) -> FittedTable:
    table = FittedTable(title="plan", caption="an estimate")
    table.add_column("stage")
    for i in range(columns):
        table.add_column(f"column {i}", justify="right")
    for name in NAMES:
        table.add_row(name, *(f"{1000 * (i + 1)} steps" for i in range(columns)))
    return table


def test_columns_side_by_side_when_they_fit(assert_readable):
    text = render(plan_like(columns=3))
    assert_readable(text, NAMES)
    rows = [line for line in text.splitlines() if line.split() and line.split()[0] in NAMES]
    assert [row.split()[0] for row in rows] == NAMES
    assert all(row.split()[1:] == ["1000", "steps", "2000", "steps", "3000", "steps"] for row in rows)
    assert text.count("column 0") == 1 and "an estimate" in text


def test_each_name_above_its_cells_when_the_names_are_too_long(assert_readable):
    table = plan_like(columns=4)
    text = render(table)
    assert_readable(text, NAMES)
    lines = text.splitlines()
    assert lines[0].strip() == "plan" and "column 3" in lines[1]
    for name in NAMES:
        below = lines[lines.index(name) + 1]
        assert below.split() == ["1000", "steps", "2000", "steps", "3000", "steps", "4000", "steps"]
    assert len({line.rindex("4000 steps") for line in lines if "4000 steps" in line}) == 1  # aligned
    assert "4000 steps" in render(table, width=120).splitlines()[3]  # one line per row when it fits


def test_blocks_of_pairs_when_even_the_cells_do_not_fit(assert_readable):
    text = render(plan_like(columns=8))
    assert_readable(text, NAMES)
    lines = text.splitlines()
    for name in NAMES:
        block = "\n".join(lines[lines.index(name) + 1:lines.index(name) + 4])
        assert all(f"column {i}: {1000 * (i + 1)} steps" in block for i in range(8))


def test_wrap_columns_wrap_at_spaces_and_others_stay_whole(assert_readable):
    table = FittedTable()
    table.add_column("name")
    table.add_column("description", wrap=True)
    words = [f"word{i:02d}" for i in range(30)]
    table.add_row("unet-large", " ".join(words))
    text = render(table)
    assert_readable(text, ["unet-large", *words])
    assert text.splitlines()[2].startswith("unet-large")
    assert sum(line.count("word") for line in text.splitlines()) == 30  # no word is split


def test_a_narrow_console_never_cuts_a_name(assert_readable):
    text = render(plan_like(columns=2), width=40)
    assert_readable(text, NAMES, width=40)
    assert all(name in text.splitlines() for name in NAMES)
    narrower = render(plan_like(columns=2), width=20)  # a name wider than the console folds, nothing is lost
    assert_readable(narrower, width=20)
    assert all(name in "".join(line.strip() for line in narrower.splitlines()) for name in NAMES)


def test_row_of_the_wrong_length_is_refused():
    table = plan_like(columns=1)
    with pytest.raises(ValueError, match="a row of 1 cells for 2 columns"):
        table.add_row("only a name")
