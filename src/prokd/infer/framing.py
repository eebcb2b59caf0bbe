"""Locate, then segment: predict again on a box framed around the gland found, when the gland appeared on the grid
larger or smaller than most of those the network was trained on.

A 2D network learns the framing of its training images, i.e. how large the gland appears on its grid. Scanners
differ: with a wider field of view the gland covers a small part of the image, with a tighter one most of it,
and a network trained on one framing fails on the other (on PROMISE12 a 2x wider field of view costs the teacher
48 Dice points, BENCHMARKS.md ``field-of-view``). Coarse-to-fine segmenters locate the organ first and segment a
box around it, repeating while the box moves (Zhou et al., "A Fixed-Point Model for Pancreas Segmentation in
Abdominal CT Scans", MICCAI 2017). Here the same network does both, and a volume is reframed only when the gland
it found is out of the range of the training cases; its size is then brought to the nearer end of that range:

    zoom = the nearer end of the training range / extent of the located gland on the grid

where an extent is the longer side of the in-plane bounding box of the gland over all slices (as a fraction of the
grid's side), and the range runs from the 10th to the 90th percentile over the run's training cases
(:func:`extent_range`, stored in the checkpoint as ``postprocess.gland_extents``), with a 5 % tolerance. A gland
within it keeps the first prediction: no extra cost and no change. Training cases' glands lie outside it too (a
fifth of them, by construction), so some volumes framed as in training are reframed; on PROMISE12 this costs less
than a Dice point on the original framing (BENCHMARKS.md ``field-of-view``). The box is centred on the located
gland and keeps the plan's pixel aspect; where it reaches beyond the image the grid is padded as in any other plan
(:class:`~prokd.data.preprocess.GridPlan`), and the prediction maps back to the original grid the same way. Each
pass costs one more prediction of the volume; a pass that finds no gland is dropped and ends them.

A gland found in the wrong place is out of this method's reach: in a field of view twice as wide the first pass,
made at a framing the network never learned, often segments another structure of about the gland's size (the
rectum, an endorectal coil), so no reframing follows. For a field of view of unknown width the first pass can be
made at several zooms about the image centre instead (``postprocess.framings``, :func:`centred_plan`), keeping
the prediction the network is surest of (:func:`framing_confidence`, the mean probability over its mask): at the
framing it learned it segments the gland with sharp, confident boundaries, at others it hesitates. This is a
test-time search over scales, as multi-scale detectors pick the scale of the strongest response; each zoom costs
one prediction of the volume.

Chosen on the 4 validation cases of the fixed PROMISE12 split (``unet-small`` from scratch, seed 0), against
reframing every volume to the median extent and against the full range (0th to 100th percentile): an
exploration, not a benchmark; the test numbers are in BENCHMARKS.md ``field-of-view``.

The framing search was first explored on the same 4 validation cases with five ``unet-small`` of
``configs/promise12_regime_b.yaml``, over the zooms 0.5, 0.7, 1, 1.5 and 2, then checked on the validation cases
of the four ``unet-small`` of ``configs/promise12_regime_c.yaml`` trained on three sites' labels (3 cases each,
12 volumes; ``python benchmarks/field_of_view.py --experiment promise12_regime_c --split val --variants relocate
framings framings-relocate framings-no-half``, BENCHMARKS.md ``field-of-view-promise12_regime_c-val``). Mean 3D
Dice there:

    ====================================  =========  ========  ========  ======  =============  ===========
    first pass                            crop 0.6x  original  pad 1.5x  pad 2x  resample 0.5x  resample 2x
    ====================================  =========  ========  ========  ======  =============  ===========
    own framing                           0.644      0.847     0.759     0.370   0.849          0.852
    own framing, relocate 2               0.833      0.839     0.721     0.512   0.851          0.854
    most confident zoom                   0.841      0.840     0.752     0.749   0.847          0.834
    most confident zoom, relocate 2       0.789      0.799     0.698     0.729   0.810          0.817
    most confident zoom, without 0.5      0.817      0.840     0.854     0.749   0.847          0.834
    ====================================  =========  ========  ========  ======  =============  ===========

The search removes most of the loss of a wider or tighter field of view; adding locate-then-segment after it
costs 2 to 5 points at every shift. Without zoom 0.5 the search does better at 1.5x and worse on the crop (in the
exploration the crop lost up to 16 points); both miss 2x by 9 points, so the five zooms stay the documented
choice. In the exploration the soft Dice of probability and mask, as the confidence, failed at 2x on three of
the five networks, and requiring a margin of 0.02 over the own framing changed little.

Shapes: masks ``(Z, Y, X)``; a grid plan maps ``(Z, Y, X)`` to ``(Z, S, S)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prokd.data.preprocess import GridPlan

__all__ = [
    "EXTENT_PERCENTILES",
    "EXTENT_TOLERANCE",
    "GlandBox",
    "centred_plan",
    "extent_range",
    "framing_confidence",
    "gland_box",
    "grid_extent",
    "reframed_plan",
]

EXTENT_PERCENTILES = (10.0, 90.0)
"""The percentiles of the training cases' gland extents that bound the range a volume is left alone in."""
EXTENT_TOLERANCE = 0.05
"""How far (relative) beyond the range an extent may be and still count as in it: a gland just reframed to an end of
the range is measured again with a pixel more or less, and should not be reframed once more for that."""


@dataclass(frozen=True)
class GlandBox:
    """The in-plane bounding box of a mask's union over slices: its centre (row, col) and its sides, in pixels."""

    row: float
    col: float
    height: int
    width: int

    @property
    def extent(self) -> int:
        """The longer side, in pixels (on a grid: the gland's extent)."""
        return max(self.height, self.width)


def gland_box(mask: np.ndarray) -> GlandBox | None:
    """The :class:`GlandBox` of a mask ``(Z, Y, X)`` (nonzero = gland); ``None`` when the mask is empty."""
    footprint = np.asarray(mask).any(axis=0)
    if not footprint.any():
        return None
    rows, cols = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
    return GlandBox((rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2,
                    int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))


def extent_range(grid_labels: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The range of the gland's extent on the grid over training cases, as fractions of the grid's side: the
    :data:`EXTENT_PERCENTILES` of the cases' extents.

    Args:
        grid_labels: per case, its label on the grid ``(Z, S, S)`` (cases without any gland are skipped).

    Returns:
        ``(low, high)`` in (0, 1], or ``None`` when no case has a gland.
    """
    fractions = [box.extent / label.shape[-1] for label in grid_labels if (box := gland_box(label))]
    if not fractions:
        return None
    low, high = np.percentile(fractions, EXTENT_PERCENTILES)
    return float(low), float(high)


def grid_extent(plan: GridPlan, box: GlandBox) -> float:
    """The extent of ``box`` (found in the volume's pixels) on the grid of ``plan``, as a fraction of its side: the
    longer of its sides once each is scaled as the plan scales its axis."""
    row_scale, col_scale = _scales(plan)
    return max(box.height * row_scale, box.width * col_scale) / plan.size


def _scales(plan: GridPlan) -> tuple[float, float]:
    """Grid pixels per volume pixel along rows and columns."""
    y0, y1, x0, x1 = plan.crop_box
    return plan.resampled_shape[0] / (y1 - y0), plan.resampled_shape[1] / (x1 - x0)


def reframed_plan(plan: GridPlan, box: GlandBox, extents: tuple[float, float]) -> GridPlan | None:
    """A plan framing the gland ``box`` at the nearer end of the range ``extents`` when its extent on the grid of
    ``plan`` is out of it, else ``None`` (the prediction on ``plan`` stands).

    Args:
        plan: the plan of the last prediction (its volume shape and grid size are kept).
        box: the gland that prediction found, in the volume's pixels.
        extents: ``(low, high)``, the training cases' range of extents (:func:`extent_range`).
    """
    low, high = extents
    extent = grid_extent(plan, box)
    if low * (1 - EXTENT_TOLERANCE) <= extent <= high * (1 + EXTENT_TOLERANCE):
        return None
    return _framed_plan(plan, box, min(max(extent, low), high) / extent)


def _framed_plan(plan: GridPlan, box: GlandBox, zoom: float) -> GridPlan:
    """A grid plan that scales both axes ``zoom`` times as much as ``plan`` does (so a pixel keeps its aspect on the
    grid) and whose crop, the grid's whole side along each axis, is centred on ``box``; the part of it outside the
    image is padding."""
    crop, resampled, offset = [], [], []
    for centre, length, scale in zip((box.row, box.col), plan.volume_shape[1:], _scales(plan)):
        scale *= zoom
        side = max(1, round(plan.size / scale))
        start = round(centre - side / 2)
        first, last = max(start, 0), min(start + side, length)
        crop += [first, last]
        resampled.append(min(plan.size, max(1, round((last - first) * scale))))
        offset.append(round((first - start) * scale))
    return GridPlan(
        volume_shape=plan.volume_shape,
        crop_box=tuple(crop),
        resampled_shape=tuple(resampled),
        offset=tuple(offset),
        size=plan.size,
    )


def centred_plan(plan: GridPlan, zoom: float) -> GridPlan:
    """``plan`` zoomed ``zoom`` times about the centre of its crop, keeping the pixel aspect: 2 puts the central half
    of the field of view on the grid, 0.5 twice the field of view (the part outside the image is padding); 1 returns
    ``plan`` itself."""
    if zoom == 1:
        return plan
    y0, y1, x0, x1 = plan.crop_box
    return _framed_plan(plan, GlandBox((y0 + y1) / 2, (x0 + x1) / 2, 0, 0), zoom)


def framing_confidence(probability: np.ndarray, mask: np.ndarray) -> float:
    """How sure a prediction is of the gland it found: the mean foreground probability ``(Z, Y, X)`` over its mask
    ``(Z, Y, X)``, in [0.5, 1] for a mask thresholded at 0.5; 0 when the mask is empty."""
    inside = np.asarray(mask) > 0
    return float(np.asarray(probability)[inside].mean()) if inside.any() else 0.0
