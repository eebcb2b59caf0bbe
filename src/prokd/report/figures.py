"""The report's plots, drawn with matplotlib's object-oriented API on its Agg canvas (no pyplot, no global
state) and returned as PNG bytes: training curves, Dice versus CPU latency with the Pareto front, per-site
Dice bars, Dice under the field-of-view shifts, reliability diagrams. Colours are fixed per group
(:func:`group_colours`) so a group looks the same in every figure.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from prokd.eval.calibration import Calibration
from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE

__all__ = [
    "Curve",
    "GroupPoint",
    "dice_latency",
    "field_of_view_curves",
    "group_colours",
    "pareto_front",
    "png_bytes",
    "reliability_diagrams",
    "site_dice_bars",
    "training_curves",
]

DPI = 100
FIELD_OF_VIEW_PANELS = (
    (("crop", "pad"), "field of view (× the original's)", "field of view: cropped, padded"),
    (("resample",), "in-plane pixels per axis (× the original's)", "in-plane resolution: resampled"),
)
"""The panels of :func:`field_of_view_curves`: the shift kinds each shows besides the original, axis label, title."""
SEED_STYLES = ("-", "--", ":", "-.")
Colour = tuple[float, ...]


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def group_colours(groups: Sequence[str]) -> dict[str, Colour]:
    """One ``tab10`` colour per group, in the given order (cycling after ten)."""
    palette = colormaps["tab10"].colors
    return {group: palette[i % len(palette)] for i, group in enumerate(groups)}


@dataclass
class Curve:
    """One run's per-epoch training loss and validation Dice."""

    group: str
    seed: int
    epochs: list[int]
    loss: list[float]
    val_epochs: list[int]
    val_dice: list[float]

    @classmethod
    def from_log(cls, group: str, seed: int, records: list[dict[str, Any]]) -> Curve:
        """From ``metrics.jsonl`` records (``epoch``, ``loss`` and, on validated epochs, ``val_dice``)."""
        validated = [r for r in records if "val_dice" in r]
        return cls(
            group,
            seed,
            [r["epoch"] for r in records],
            [r["loss"] for r in records],
            [r["epoch"] for r in validated],
            [r["val_dice"] for r in validated],
        )


def training_curves(curves: Sequence[Curve], colours: dict[str, Colour]) -> bytes:
    """Loss (left) and validation Dice (right) per epoch; one line per run, a group's seeds share a colour
    and differ in line style."""
    figure = Figure(figsize=(12, 4.2))
    loss_ax, dice_ax = figure.subplots(1, 2)
    seen: dict[str, int] = {}
    for curve in curves:
        index = seen.get(curve.group, 0)
        seen[curve.group] = index + 1
        style = {"color": colours[curve.group], "linestyle": SEED_STYLES[index % len(SEED_STYLES)], "marker": "."}
        label = curve.group if index == 0 else None
        loss_ax.plot(curve.epochs, curve.loss, label=label, **style)
        dice_ax.plot(curve.val_epochs, curve.val_dice, **style)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    dice_ax.set(xlabel="epoch", ylabel="validation Dice", title="validation Dice (3D)", ylim=(0, 1))
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.legend(loc="outside right upper", fontsize=9)
    figure.set_layout_engine("constrained")
    return png_bytes(figure)


@dataclass
class GroupPoint:
    """A group's mean CPU latency per slice and its test Dice mean ± sd."""

    name: str
    latency_ms: float
    dice: float
    dice_sd: float


def pareto_front(latency: Sequence[float], dice: Sequence[float]) -> list[int]:
    """Indices of the Pareto-optimal points (lower latency and higher Dice are better), by increasing latency.

    A point is optimal unless another one is at least as fast and at least as accurate, and strictly
    better in one of the two; identical points are both optimal.
    """
    if len(latency) != len(dice):
        raise ValueError(f"pareto_front: {len(latency)} latencies but {len(dice)} Dice values")

    def dominated(i: int) -> bool:
        return any(
            latency[j] <= latency[i] and dice[j] >= dice[i] and (latency[j] < latency[i] or dice[j] > dice[i])
            for j in range(len(latency))
        )

    return sorted((i for i in range(len(latency)) if not dominated(i)), key=lambda i: (latency[i], -dice[i]))


def dice_latency(points: Sequence[GroupPoint], colours: dict[str, Colour]) -> bytes:
    """Test Dice (± sd) against CPU latency per slice, one labeled point per group, Pareto front dashed."""
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    ax = figure.subplots()
    for point in points:
        ax.errorbar(point.latency_ms, point.dice, yerr=point.dice_sd, fmt="o", capsize=4, color=colours[point.name])
        ax.annotate(point.name, (point.latency_ms, point.dice), textcoords="offset points", xytext=(6, 6), fontsize=9)
    latency = [p.latency_ms for p in points]
    front = pareto_front(latency, [p.dice for p in points])
    ax.step([latency[i] for i in front], [points[i].dice for i in front], where="post", color="grey",
            linestyle="--", label="Pareto front")
    if min(latency) > 0 and max(latency) / min(latency) > 10:
        ax.set_xscale("log")
    ax.set(xlabel="CPU latency per slice (ms)", ylabel="test Dice", title="accuracy versus CPU latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return png_bytes(figure)


def site_dice_bars(
    groups: Sequence[str], sites: Sequence[str], mean: np.ndarray, sd: np.ndarray, colours: dict[str, Colour]
) -> bytes:
    """Grouped bars of test Dice per site: ``mean`` and ``sd`` are (groups, sites); NaN leaves a gap."""
    width = 0.8 / len(groups)
    figure = Figure(figsize=(max(7.0, 1.2 + len(sites) * len(groups) * 0.45), 4.5), layout="constrained")
    ax = figure.subplots()
    x = np.arange(len(sites))
    for g, group in enumerate(groups):
        offset = (g - (len(groups) - 1) / 2) * width
        ax.bar(x + offset, mean[g], width, yerr=sd[g], capsize=2, color=colours[group], label=group)
    ax.set_xticks(x, sites)
    ax.set(ylabel="test Dice", ylim=(0, 1.05), title="test Dice per site")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, ncols=min(4, len(groups)), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    return png_bytes(figure)


def field_of_view_curves(
    curves: dict[str, dict[str, float]], ceilings: dict[str, dict[str, float]], colours: dict[str, Colour]
) -> bytes:
    """3D test Dice against the shift, one line per group: the field of view (crop and pads; left) and the in-plane
    resolution (right), the original in both, on a log₂ axis of the shift's factor.

    Args:
        curves: ``{group: {shift name: Dice}}`` (the names of :data:`~prokd.eval.field_of_view.FIELD_OF_VIEW_CURVE`).
        ceilings: ``{name: {shift name: Dice}}``, the label itself shifted and mapped back: grey, dashed.
    """
    figure = Figure(figsize=(12, 4.2))
    axes = figure.subplots(1, 2, sharey=True)
    for ax, (kinds, xlabel, title) in zip(axes, FIELD_OF_VIEW_PANELS):
        shifts = sorted((s for s in FIELD_OF_VIEW_CURVE if s.kind in (*kinds, "original")), key=lambda s: s.factor)
        factors = [shift.factor for shift in shifts]
        first = ax is axes[0]
        for name, dice in ceilings.items():
            ax.plot(factors, [dice[s.name] for s in shifts], color="grey", linestyle="--", marker=".",
                    label=name if first else None)
        for group, dice in curves.items():
            ax.plot(factors, [dice[s.name] for s in shifts], color=colours[group], marker="o",
                    label=group if first else None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(factors, [shift.name for shift in shifts])
        ax.minorticks_off()
        ax.set(xlabel=xlabel, title=title, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test Dice (3D)")
    figure.legend(loc="outside right upper", fontsize=9)
    figure.set_layout_engine("constrained")
    return png_bytes(figure)


def reliability_diagrams(names: Sequence[str], calibrations: Sequence[Calibration]) -> bytes:
    """One reliability diagram per model: the share of foreground voxels against the mean predicted probability in
    each probability bin, at temperature 1 and at the fitted temperature, with the diagonal of perfect calibration."""
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, name, calibration in zip(axes, names, calibrations):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for curve, label, marker in ((calibration.before, "T = 1", "o"),
                                     (calibration.after, f"T = {calibration.temperature:.2f}", "s")):
            points = [(c, f) for c, f in zip(curve.confidence, curve.frequency) if c is not None]
            ax.plot(*zip(*points), marker=marker, markersize=4, label=f"{label}, ECE {curve.ece:.3f}")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    figure.supxlabel("predicted foreground probability (bin mean)", fontsize=9)
    figure.supylabel("foreground share", fontsize=9)
    return png_bytes(figure)
