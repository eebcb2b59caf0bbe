"""How a training run shows its progress: a live bar on a terminal, plain lines in a log.

A console that is not a terminal (output piped to a file, a CI log) or a dumb one (``TERM=dumb``) gets
:class:`ProgressLines`: one line each time another tenth of the run is done, no carriage returns and no escape
codes. A terminal gets :class:`ProgressBar`. Both print the notes they are given (the validation Dice) as lines.
"""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LINE_EVERY = 0.1
"""Fraction of the run between two progress lines."""


class ProgressBar:
    """A rich progress bar over the run's progress fraction (0 to 1); nothing is shown without a console."""

    def __init__(self, console: Console | None, completed: float) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=console is None,
        )
        self.task = self.progress.add_task("train", total=1.0, completed=completed)

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, fraction: float, description: str) -> None:
        self.progress.update(self.task, completed=fraction, description=description)

    def note(self, line: str) -> None:
        if not self.progress.disable:
            self.progress.console.print(line, highlight=False)


class ProgressLines:
    """Plain progress lines: ``" 30% epoch 3 step 300 loss 0.412 (1.2 min)"``, one per :data:`LINE_EVERY`."""

    def __init__(self, console: Console, completed: float) -> None:
        self.console = console
        self.marks = _marks_passed(completed)
        self.started = time.monotonic()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, fraction: float, description: str) -> None:
        if _marks_passed(fraction) > self.marks:
            minutes = (time.monotonic() - self.started) / 60
            self.note(f"{fraction:4.0%} {description} ({minutes:.1f} min)")
            self.marks = _marks_passed(fraction)

    def note(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)


def training_progress(console: Console | None, completed: float = 0.0) -> ProgressBar | ProgressLines:
    """The progress display for ``console`` (None: show nothing), starting at the ``completed`` fraction."""
    if console is not None and (not console.is_terminal or console.is_dumb_terminal):
        return ProgressLines(console, completed)
    return ProgressBar(console, completed)


def _marks_passed(fraction: float) -> int:
    """How many multiples of :data:`LINE_EVERY` ``fraction`` has reached (``0.3``: three of ``0.1``)."""
    return math.floor(fraction / LINE_EVERY + 1e-9)
