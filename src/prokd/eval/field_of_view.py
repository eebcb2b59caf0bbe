"""Field-of-view and resolution shifts of a test case, and their exact way back to the original grid.

Sites and scanners frame the prostate differently: a tighter or wider field of view, a finer or coarser in-plane
grid. A model that learned one framing can fail on another, so the protocol (:mod:`prokd.eval.field_of_view_eval`,
run by ``prokd experiment`` for entries with ``field_of_view: true`` and by ``benchmarks/field_of_view.py``) also
predicts every test case

- **cropped** to 0.6x its in-plane field of view (centred; what lies outside is not seen, and counts as
  background when the mask goes back),
- **padded** to 1.5x and 2x its field of view (centred, with the volume's minimum intensity: empty space
  around the body), and
- **resampled** to 0.5x and 2x its in-plane resolution (the same field of view on a grid with half or twice as
  many pixels per axis; linear interpolation for images, nearest neighbour for masks),

and scores each mask in 3D against the label on the original grid, after mapping it back with
:meth:`FieldOfView.restore`. Through-plane (axis 0, the slices) nothing changes. When the case has a known
spacing the shifted volume's spacing follows it (resampling to 2x the pixels halves the in-plane spacing; a
crop or pad keeps it), so a spacing-aware model sees the same anatomy at the same size in millimetres.

Shapes: volumes ``(Z, Y, X)``; a shift changes ``Y`` and ``X`` only. Crop and pad are exact inverses of each
other on the kept region; resampling by 2x and back by 0.5x (nearest neighbour) returns the original mask exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["FIELD_OF_VIEW_CURVE", "FieldOfView"]

KINDS = ("original", "crop", "pad", "resample")


@dataclass(frozen=True)
class FieldOfView:
    """One shift of the in-plane framing: ``kind`` (one of ``original``, ``crop``, ``pad``, ``resample``) by
    ``factor`` (the new field of view, or the new number of pixels per axis, relative to the original)."""

    kind: str
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field-of-view shift {self.kind!r}: must be one of {', '.join(KINDS)}")
        if self.factor <= 0 or (self.kind == "crop" and self.factor > 1) or (self.kind == "pad" and self.factor < 1):
            raise ValueError(f"{self.name}: a crop takes a factor in (0, 1], a pad one of at least 1, a resampling > 0")

    @property
    def name(self) -> str:
        """A short label such as ``crop 0.6x`` or ``original``."""
        return "original" if self.kind == "original" else f"{self.kind} {self.factor:g}x"

    def shifted_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape ``(Z, Y', X')`` a volume of ``shape`` ``(Z, Y, X)`` has after the shift."""
        if self.kind == "original":
            return tuple(shape)
        return (shape[0], *(max(1, round(size * self.factor)) for size in shape[1:]))

    def apply(self, volume: np.ndarray, label: bool = False) -> np.ndarray:
        """The shifted volume ``(Z, Y', X')``; ``label``: nearest-neighbour resampling and zero padding for a mask."""
        target = self.shifted_shape(volume.shape)
        if self.kind == "crop":
            return volume[(slice(None), *_centred(volume.shape[1:], target[1:]))]
        if self.kind == "pad":
            filled = np.full(target, 0 if label else volume.min(), dtype=volume.dtype)
            filled[(slice(None), *_centred(target[1:], volume.shape[1:]))] = volume
            return filled
        if self.kind == "resample":
            return _resampled(volume, target, order=0 if label else 1)
        return volume

    def restore(self, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A mask predicted on the shifted volume, back on the original grid ``shape`` ``(Z, Y, X)``: the crop
        pasted into background, the padding cut off, the resampled grid resampled back (nearest neighbour)."""
        if self.kind == "crop":
            restored = np.zeros(shape, dtype=mask.dtype)
            restored[(slice(None), *_centred(shape[1:], mask.shape[1:]))] = mask
            return restored
        if self.kind == "pad":
            return mask[(slice(None), *_centred(mask.shape[1:], shape[1:]))]
        if self.kind == "resample":
            return _resampled(mask, tuple(shape), order=0)
        return mask

    def spacing(self, spacing: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        """The voxel spacing ``(z, y, x)`` of the shifted volume (``None`` stays unknown)."""
        if spacing is None or self.kind != "resample":
            return spacing
        return (spacing[0], spacing[1] / self.factor, spacing[2] / self.factor)


FIELD_OF_VIEW_CURVE = (
    FieldOfView("crop", 0.6),
    FieldOfView("original"),
    FieldOfView("pad", 1.5),
    FieldOfView("pad", 2.0),
    FieldOfView("resample", 0.5),
    FieldOfView("resample", 2.0),
)
"""The shifts of the protocol, in the order of its tables."""


def _centred(outer: tuple[int, ...], inner: tuple[int, ...]) -> tuple[slice, ...]:
    """The centred window of size ``inner`` inside ``outer``, per axis."""
    return tuple(slice((o - i) // 2, (o - i) // 2 + i) for o, i in zip(outer, inner))


def _resampled(volume: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """``volume`` on a grid of ``shape`` covering the same extent (pixel-area convention: ``grid_mode``), slices
    unchanged."""
    zoom = [1.0, *(new / old for new, old in zip(shape[1:], volume.shape[1:]))]
    source = volume.astype(np.float32) if order > 0 else volume
    resampled = ndimage.zoom(source, zoom, order=order, grid_mode=True, mode="nearest")
    return resampled.astype(volume.dtype, copy=False)
