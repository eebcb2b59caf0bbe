"""Validate every case of a dataset and summarise it per site (the logic behind ``prokd data check``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.text import Text

from prokd.data.datalist import CaseIndex, DatasetError, LoadedCase, load_case
from prokd.table import FittedTable


@dataclass(frozen=True)
class CaseStats:
    """What one readable case looks like.

    Attributes:
        case_id, site: from the dataset description.
        labeled: whether the case has a label.
        slices, rows, cols: the volume shape ``(Z, Y, X)``.
        spacing: ``(z, y, x)`` in mm, or ``None`` when unknown.
        foreground_fraction: fraction of voxels in the mask, ``None`` for unlabeled cases.
    """

    case_id: str
    site: str
    labeled: bool
    slices: int
    rows: int
    cols: int
    spacing: tuple[float, float, float] | None
    foreground_fraction: float | None


@dataclass
class CheckReport:
    """Statistics of the cases that loaded and one error line per case that did not."""

    cases: list[CaseStats]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def site_rows(self) -> list[dict[str, Any]]:
        """One row per site, sorted by site name, aggregating the cases that loaded.

        Returns:
            dicts with ``site``, ``cases``, ``labeled``, ``slices`` (total), ``in_plane`` (e.g.
            ``"160x160, 256x256"``), ``spacing`` (per-axis ranges in mm, e.g. ``"(3-4, 0.5, 0.5) mm"``,
            or ``"unknown"``) and ``foreground`` (mean foreground fraction of the labeled cases, or ``None``).
        """
        by_site: dict[str, list[CaseStats]] = {}
        for stats in self.cases:
            by_site.setdefault(stats.site, []).append(stats)
        return [_site_row(site, by_site[site]) for site in sorted(by_site)]


def check_cases(index: CaseIndex, label_map: dict[int, int] | None = None, channel: int | None = None) -> CheckReport:
    """Load every labeled, unlabeled and test case of ``index``, collecting one error line per bad case.

    Args:
        index: the dataset.
        label_map, channel: passed to :func:`prokd.data.datalist.load_case`.
    """
    stats, errors = [], []
    for case in (*index.labeled, *index.unlabeled, *index.test):
        try:
            loaded = load_case(case, label_map, channel)
        except DatasetError as err:
            errors.append(str(err))
            continue
        stats.append(_case_stats(loaded))
    return CheckReport(stats, errors)


def render_report(report: CheckReport, console: Console) -> None:
    """Print the per-site table, then every error on a line of its own (or a line saying all cases loaded)."""
    table = FittedTable(title="Dataset check")
    for column, justify, wrap in (
        ("Site", "left", False),
        ("Cases", "right", False),
        ("Labeled", "right", False),
        ("Slices", "right", False),
        ("In-plane (rows x cols)", "left", True),
        ("Spacing (z, y, x)", "left", True),
        ("Foreground", "right", False),
    ):
        table.add_column(column, justify=justify, wrap=wrap)
    for row in report.site_rows():
        foreground = "-" if row["foreground"] is None else f"{row['foreground']:.2%}"
        cells = (row["site"], row["cases"], row["labeled"], row["slices"], row["in_plane"], row["spacing"], foreground)
        table.add_row(*(str(cell) for cell in cells))
    console.print(table)
    if report.ok:
        console.print(Text(f"All {len(report.cases)} cases loaded without problems.", style="green"))
        return
    console.print(Text(f"{len(report.errors)} case(s) with problems:", style="bold red"))
    for error in report.errors:
        console.print(Text(error, style="red"), soft_wrap=True)


def _case_stats(loaded: LoadedCase) -> CaseStats:
    slices, rows, cols = loaded.image.shape
    labeled = loaded.label is not None
    foreground = float(np.count_nonzero(loaded.label)) / loaded.label.size if labeled else None
    case = loaded.case
    return CaseStats(case.case_id, case.site, labeled, slices, rows, cols, loaded.geometry.spacing, foreground)


def _site_row(site: str, cases: list[CaseStats]) -> dict[str, Any]:
    fractions = [c.foreground_fraction for c in cases if c.foreground_fraction is not None]
    return {
        "site": site,
        "cases": len(cases),
        "labeled": sum(c.labeled for c in cases),
        "slices": sum(c.slices for c in cases),
        "in_plane": ", ".join(f"{rows}x{cols}" for rows, cols in sorted({(c.rows, c.cols) for c in cases})),
        "spacing": _spacing_range([c.spacing for c in cases]),
        "foreground": float(np.mean(fractions)) if fractions else None,
    }


def _spacing_range(spacings: list[tuple[float, float, float] | None]) -> str:
    """``"(3-4, 0.5, 0.5) mm"`` (per-axis min-max over the known spacings), noting how many are unknown."""
    known = np.array([s for s in spacings if s is not None])
    if known.size == 0:
        return "unknown"
    axes = ", ".join(_value_range(lo, hi) for lo, hi in zip(known.min(axis=0), known.max(axis=0)))
    unknown = len(spacings) - len(known)
    return f"({axes}) mm" + (f" ({unknown} unknown)" if unknown else "")


def _value_range(lo: float, hi: float) -> str:
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g}-{hi:.3g}"
