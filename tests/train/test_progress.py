"""Progress display: plain lines (no carriage returns, no escape codes) unless the console is a real terminal."""

from __future__ import annotations

import io

from rich.console import Console

from prokd.train.progress import ProgressBar, ProgressLines, training_progress


def test_a_log_gets_one_line_per_tenth_and_the_notes():
    console = Console(file=io.StringIO(), width=80)
    display = training_progress(console)
    assert isinstance(display, ProgressLines)
    with display:
        for step in range(1, 41):
            display.update(step / 40, f"epoch 1 step {step} loss 0.5")
            if step == 20:
                display.note("epoch 1 step 20: val Dice 0.812")
    lines = console.file.getvalue().splitlines()
    progress = [line for line in lines if "%" in line]
    assert [line.split()[0] for line in progress] == [f"{10 * k}%" for k in range(1, 11)]
    assert progress[0].startswith(" 10% epoch 1 step 4 loss 0.5 (") and progress[0].endswith(" min)")
    assert lines[lines.index(progress[4]) + 1] == "epoch 1 step 20: val Dice 0.812"


def test_a_resumed_run_starts_at_the_next_tenth():
    console = Console(file=io.StringIO())
    with training_progress(console, completed=0.45) as display:
        display.update(0.47, "a")
        display.update(0.5, "b")
        display.update(0.95, "c")
    assert [line.split()[:2] for line in console.file.getvalue().splitlines()] == [["50%", "b"], ["95%", "c"]]


def test_terminals_get_the_bar_and_dumb_ones_the_lines():
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(training_progress(terminal), ProgressBar)
    dumb = Console(file=io.StringIO(), force_terminal=True, _environ={"TERM": "dumb"})
    assert isinstance(training_progress(dumb), ProgressLines)
    assert isinstance(training_progress(None), ProgressBar)


def test_no_console_shows_nothing():
    with training_progress(None) as display:
        display.update(0.5, "half")
        display.note("val Dice 0.5")
    assert display.progress.disable
