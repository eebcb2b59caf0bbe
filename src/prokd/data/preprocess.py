"""The canonical in-plane grid: intensity normalisation, resampling to ``(size, size)`` and its exact inverse.

A volume of shape ``(Z, Y, X)``, in the canonical orientation of :mod:`prokd.data.orientation` (axial slices
along Z), is mapped slice by slice to ``(Z, size, size)``; slices (Z) are never resampled. How one volume maps is fixed by a :class:`GridPlan`:

* spacing known and ``target_spacing`` set: each slice is resampled by ``spacing_yx / target_spacing`` (so a
  grid pixel measures ``target_spacing`` mm, up to rounding of the resampled shape), then centre-cropped or
  padded to ``(size, size)``;
* otherwise: an optional centre crop of ``crop_fraction`` of the field of view is resized to
  ``(size, size)`` (the aspect ratio of non-square slices is not kept).

Resampling is ``torch.nn.functional.interpolate`` in bilinear mode with ``align_corners=False`` and
``antialias=True``: plain bilinear interpolation when enlarging, a triangle filter widened by the
reduction factor when shrinking, so that downsampling does not alias. Images, labels and probabilities all
use this one resampler, which keeps forward and inverse mapping consistent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prokd.config import PreprocessConfig, from_dict, plain

_STD_FLOOR = 1e-8
_LABEL_THRESHOLD = 0.5


def normalize_intensity(image: np.ndarray, clip_percentiles: Sequence[float] = (0.5, 99.5)) -> np.ndarray:
    """Robust per-volume z-scoring: clip to intensity percentiles, then subtract the mean and divide by
    the standard deviation of the clipped intensities (as in nnU-Net's MRI normalisation, Isensee et al.,
    Nature Methods 2021, without its foreground crop).

    Percentiles, mean and standard deviation are taken over the nonzero voxels (all voxels if every voxel is
    zero): zero-filled borders outside the field of view would otherwise drag the statistics by an amount
    that depends on the size of the padding. The zero voxels are then clipped to the low percentile like any
    other, so they become the darkest value of the result.

    Args:
        image: volume of shape (Z, Y, X), any real dtype.
        clip_percentiles: low and high percentile, in [0, 100].

    Returns:
        float32 array of shape (Z, Y, X). The result does not change when ``image`` is multiplied by a
        positive constant.

    Raises:
        ValueError: the image is not 3D or contains NaN or infinite values.
    """
    volume = np.asarray(image, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"image must have shape (Z, Y, X), got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise ValueError("image contains NaN or infinite values")
    nonzero = volume[volume != 0]
    samples = nonzero if nonzero.size else volume.ravel()
    low, high = np.percentile(samples, clip_percentiles)
    clipped_samples = np.clip(samples, low, high)
    mean = clipped_samples.mean(dtype=np.float64)
    std = max(float(clipped_samples.std(dtype=np.float64)), _STD_FLOOR)
    return ((np.clip(volume, low, high) - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class GridPlan:
    """How one volume maps to the canonical grid and back.

    Forward, for every slice: take ``crop_box`` of the (Y, X) slice, resample it to ``resampled_shape``,
    then place it on a ``(size, size)`` grid with its top-left corner at ``offset`` (a negative offset
    crops the resampled slice, a positive one pads it). The inverse runs these steps backwards.

    Attributes:
        volume_shape: original (Z, Y, X).
        crop_box: ``(y0, y1, x0, x1)``, the part of each slice that is resampled (half-open ranges).
        resampled_shape: (rows, cols) the crop is resampled to.
        offset: (row, col) of the resampled slice's top-left corner on the grid.
        size: side of the square grid.
    """

    volume_shape: tuple[int, int, int]
    crop_box: tuple[int, int, int, int]
    resampled_shape: tuple[int, int]
    offset: tuple[int, int]
    size: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (tuples become lists)."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridPlan:
        return from_dict(cls, data, prefix="grid_plan.")


class Preprocessor:
    """Maps volumes to the network's canonical ``(size, size)`` grid and probabilities back.

    Args:
        config: grid size, target spacing, crop fraction and clip percentiles.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def plan(self, shape_zyx: Sequence[int], spacing: Sequence[float] | None = None) -> GridPlan:
        """The grid plan for a volume of shape (Z, Y, X) with voxel spacing (z, y, x) in mm, or ``None``.

        Raises:
            ValueError: the shape is not three positive sizes, or the spacing not three positive values.
        """
        shape = tuple(int(n) for n in shape_zyx)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"volume shape must be three positive sizes (Z, Y, X), got {tuple(shape_zyx)}")
        if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
            raise ValueError(f"spacing must be three positive values (z, y, x) in mm, got {tuple(spacing)}")
        rows, cols = shape[1:]
        size = self.config.size
        if spacing is not None and self.config.target_spacing is not None:
            crop_box = (0, rows, 0, cols)
            resampled = (
                max(1, _round(rows * spacing[1] / self.config.target_spacing)),
                max(1, _round(cols * spacing[2] / self.config.target_spacing)),
            )
        else:
            fraction = self.config.crop_fraction or 1.0
            crop_rows, crop_cols = max(1, _round(rows * fraction)), max(1, _round(cols * fraction))
            top, left = (rows - crop_rows) // 2, (cols - crop_cols) // 2
            crop_box = (top, top + crop_rows, left, left + crop_cols)
            resampled = (size, size)
        offset = ((size - resampled[0]) // 2, (size - resampled[1]) // 2)
        return GridPlan(volume_shape=shape, crop_box=crop_box, resampled_shape=resampled, offset=offset, size=size)

    def image_to_grid(self, image: np.ndarray, plan: GridPlan) -> np.ndarray:
        """Normalise (:meth:`normalize`) and resample an image (Z, Y, X) to float32 (Z, size, size)."""
        _check_shape("image", image, plan.volume_shape)
        return self.normalized_to_grid(self.normalize(image), plan)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """:func:`normalize_intensity` with the configured clip percentiles: float32 (Z, Y, X)."""
        return normalize_intensity(image, self.config.clip_percentiles)

    def normalized_to_grid(self, normalized: np.ndarray, plan: GridPlan) -> np.ndarray:
        """Resample a normalised image (Z, Y, X) (:meth:`normalize`) to float32 (Z, size, size), so that a volume
        mapped to several plans is normalised once. Padding takes its darkest value, as for zero background."""
        _check_shape("image", normalized, plan.volume_shape)
        return _to_grid(normalized, plan, fill=float(normalized.min()))

    def label_to_grid(self, label: np.ndarray, plan: GridPlan) -> np.ndarray:
        """Resample a binary label (Z, Y, X) (nonzero = foreground) to uint8 (Z, size, size).

        The mask is resampled as float with the image resampler and thresholded at 0.5, which places the
        boundary at sub-pixel accuracy and, on thin structures (rings 1-2 mm wide), keeps a higher Dice
        with the exact rasterisation than nearest-neighbour sampling.
        """
        _check_shape("label", label, plan.volume_shape)
        foreground = (np.asarray(label) > 0).astype(np.float32)
        return (_to_grid(foreground, plan, fill=0.0) >= _LABEL_THRESHOLD).astype(np.uint8)

    def grid_to_volume(self, prob: np.ndarray, plan: GridPlan) -> np.ndarray:
        """Map grid probabilities (Z, size, size) back to float32 (Z, Y, X) of the original volume.

        Parts of the volume that were cropped away (outside ``crop_box``, or outside the grid after
        resampling) get probability 0. Resampling is bilinear, so values stay within [0, 1].
        """
        volume_z = plan.volume_shape[0]
        _check_shape("prob", prob, (volume_z, plan.size, plan.size))
        y0, y1, x0, x1 = plan.crop_box
        grid = np.asarray(prob, dtype=np.float32)
        resampled = _place(grid, (-plan.offset[0], -plan.offset[1]), plan.resampled_shape, 0.0)
        cropped = _resample(resampled, (y1 - y0, x1 - x0))
        return _place(cropped, (y0, x0), plan.volume_shape[1:], 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The preprocessing parameters as a plain dict, for checkpoints."""
        return plain(dataclasses.asdict(self.config))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(from_dict(PreprocessConfig, data, prefix="preprocess."))


def _to_grid(volume: np.ndarray, plan: GridPlan, fill: float) -> np.ndarray:
    """Forward mapping of a float32 (Z, Y, X) volume to (Z, size, size), padding with ``fill``."""
    y0, y1, x0, x1 = plan.crop_box
    resampled = _resample(volume[:, y0:y1, x0:x1], plan.resampled_shape)
    return _place(resampled, plan.offset, (plan.size, plan.size), fill)


def _resample(stack: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample every slice of a float32 (Z, H, W) stack to (Z, *shape); unchanged if already that shape."""
    if tuple(stack.shape[1:]) == tuple(shape):
        return stack
    slices = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
    resized = F.interpolate(slices, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    return resized[:, 0].numpy()


def _place(stack: np.ndarray, offset: Sequence[int], shape: Sequence[int], fill: float) -> np.ndarray:
    """Put a (Z, h, w) stack on a (Z, *shape) canvas filled with ``fill``, its top-left corner at ``offset``;
    whatever falls outside the canvas is dropped."""
    canvas = np.full((stack.shape[0], *shape), fill, dtype=np.float32)
    (top, left), (height, width) = offset, stack.shape[1:]
    rows = slice(max(top, 0), min(top + height, shape[0]))
    cols = slice(max(left, 0), min(left + width, shape[1]))
    canvas[:, rows, cols] = stack[:, rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return canvas


def _check_shape(name: str, array: np.ndarray, expected: Sequence[int]) -> None:
    if tuple(np.shape(array)) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(np.shape(array))}, but the grid plan expects {tuple(expected)}")


def _round(value: float) -> int:
    """Round half up (Python's ``round`` rounds half to even)."""
    return math.floor(value + 0.5)
