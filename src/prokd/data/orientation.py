"""One canonical orientation for every volume, so that slices are axial whatever the file's axis order.

A file may store its voxels in any axis order and direction (sagittal acquisitions, NIfTI in RAS or LPS,
permuted or flipped axes). Before slicing, every volume is brought to the **canonical frame**: array axes
``(Z, Y, X)`` run as close as the direction cosines allow towards patient Superior, Posterior and Left (LPS
world), so axis 0 indexes axial slices from inferior to superior, and a slice shows anterior at the top and the
patient's right on the left (the radiological view). This is the frame of an ITK image with identity direction,
so DICOM-derived axial volumes stored the usual way are already canonical and are not touched.

The permutation and flips are nibabel orientations (:func:`nibabel.orientations.io_orientation`,
:func:`~nibabel.orientations.ornt_transform`, :func:`~nibabel.orientations.apply_orientation`) computed from
the volume's direction cosines; oblique volumes get the closest axis-aligned frame and are not resampled.
Results (masks, probability maps) are mapped back with the exact inverse and written with the file's own
geometry, so they line up with the input voxel for voxel.

Volumes without geometry (numpy files, spacing ``None``) are taken as already canonical: ``(slices, rows,
cols)`` as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from prokd.data.io import Geometry, read_volume

CANONICAL_AXES = ("S", "P", "L")
"""Where array axes ``(Z, Y, X)`` point in the canonical frame (labels of the LPS world axes below)."""
_LPS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))
_CANONICAL_ORNT = axcodes2ornt(CANONICAL_AXES, _LPS_LABELS)
_IDENTITY = ((0, 1), (1, 1), (2, 1))


@dataclass(frozen=True)
class Orientation:
    """The axis permutation and flips between a stored ``(Z, Y, X)`` array and the canonical frame.

    Attributes:
        stored_shape: the array's shape as stored.
        transform: a nibabel orientation: for each stored axis, ``(canonical axis, +1 or -1)`` (-1 flips it).
    """

    stored_shape: tuple[int, int, int]
    transform: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, shape: tuple[int, ...], geometry: Geometry) -> Orientation:
        """The orientation of an array of ``shape`` on ``geometry``; the identity when its spacing is unknown."""
        stored_shape = tuple(int(n) for n in shape)
        if geometry.spacing is None:
            return cls(stored_shape, _IDENTITY)
        transform = ornt_transform(io_orientation(_index_to_world(geometry)), _CANONICAL_ORNT)
        return cls(stored_shape, tuple((int(axis), int(flip)) for axis, flip in transform))

    @property
    def is_identity(self) -> bool:
        return self.transform == _IDENTITY

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """The shape of the canonical array: the stored sizes, permuted."""
        shape = [0, 0, 0]
        for size, (axis, _) in zip(self.stored_shape, self.transform):
            shape[axis] = size
        return tuple(shape)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A stored ``(Z, Y, X)`` array (any dtype) in the canonical frame."""
        return self._apply(array, self.stored_shape, _ornt_array(self.transform))

    def to_stored(self, array: np.ndarray) -> np.ndarray:
        """The exact inverse of :meth:`to_canonical`: a canonical array in the file's own axis order."""
        inverse = ornt_transform(_ornt_array(_IDENTITY), _ornt_array(self.transform))
        return self._apply(array, self.canonical_shape, inverse)

    def canonical_geometry(self, geometry: Geometry) -> Geometry:
        """The geometry of the canonical array: spacing permuted like the axes, origin at its first voxel, and
        direction columns permuted and flipped. Unchanged (NIfTI header fields included) for the identity."""
        if self.is_identity:
            return geometry
        canonical_to_stored = inv_ornt_aff(_ornt_array(self.transform), self.stored_shape)
        signed_permutation = canonical_to_stored[:3, :3]
        direction_zyx = np.reshape(geometry.direction, (3, 3))[:, ::-1] @ signed_permutation
        return Geometry(
            spacing=_plain_floats(np.abs(signed_permutation).T @ np.asarray(geometry.spacing)),
            origin=_plain_floats((_index_to_world(geometry) @ canonical_to_stored)[:3, 3]),
            direction=_plain_floats(direction_zyx[:, ::-1].ravel()),
        )

    def _apply(self, array: np.ndarray, expected: tuple[int, int, int], transform: np.ndarray) -> np.ndarray:
        if tuple(np.shape(array)) != expected:
            raise ValueError(f"array has shape {np.shape(array)}, but this orientation expects {expected}")
        return np.ascontiguousarray(apply_orientation(np.asarray(array), transform))


@dataclass
class CanonicalVolume:
    """A volume file read into the canonical frame.

    Attributes:
        array: ``(Z, Y, X)`` canonical array in the file's dtype, axial slices along axis 0.
        geometry: the geometry of ``array`` (its spacing is ``(z, y, x)`` of the canonical axes).
        stored_geometry: the file's own geometry, to write results with.
        orientation: the map between the stored and the canonical array.
    """

    array: np.ndarray
    geometry: Geometry
    stored_geometry: Geometry
    orientation: Orientation

    def to_stored(self, array: np.ndarray) -> np.ndarray:
        """A canonical ``(Z, Y, X)`` result (mask, probability) on the file's own array grid."""
        return self.orientation.to_stored(array)


def read_canonical(path: str | Path, channel: int | None = None) -> CanonicalVolume:
    """Read a volume (``channel`` of a multi-channel one, see :func:`prokd.data.io.read_volume`) and bring it to
    the canonical frame.

    Raises:
        VolumeError: as :func:`prokd.data.io.read_volume`.
    """
    stored, geometry = read_volume(path, channel)
    orientation = Orientation.of(stored.shape, geometry)
    canonical = orientation.to_canonical(stored)
    return CanonicalVolume(canonical, orientation.canonical_geometry(geometry), geometry, orientation)


def _index_to_world(geometry: Geometry) -> np.ndarray:
    """The ``(4, 4)`` affine from array index ``(z, y, x, 1)`` to LPS world mm."""
    affine = np.eye(4)
    affine[:3, :3] = np.reshape(geometry.direction, (3, 3))[:, ::-1] * np.asarray(geometry.spacing)
    affine[:3, 3] = geometry.origin
    return affine


def _ornt_array(pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """A nibabel orientation array ``(3, 2)`` from ``(axis, flip)`` pairs."""
    return np.asarray(pairs, dtype=float)


def _plain_floats(values: np.ndarray) -> tuple[float, ...]:
    """Python floats, with the ``-0.0`` of flipped zero direction entries written as ``0.0``."""
    return tuple(float(v) + 0.0 for v in values)
