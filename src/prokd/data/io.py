"""Reading and writing 3D volumes (NIfTI, MetaImage, NRRD, numpy) with their voxel geometry.

Every volume in memory is a numpy array of shape ``(Z, Y, X)`` = (slices, rows, cols). Its
:class:`Geometry` follows the ITK conventions (world coordinates in LPS millimetres) except that
``spacing`` is given in array-axis order ``(z, y, x)``, like the project's other spacings.

* NIfTI (``.nii``, ``.nii.gz``) goes through nibabel. The nibabel data array is indexed ``(i, j, k)``,
  so it maps to ``(Z, Y, X)`` by ``transpose(2, 1, 0)``; the RAS affine is flipped to LPS. The raw
  qform/sform header fields travel in :attr:`Geometry.nifti` so a NIfTI volume is written back with
  a bit-identical orientation.
* MetaImage (``.mha``, ``.mhd``) and NRRD (``.nrrd``) go through SimpleITK, whose
  ``GetArrayFromImage`` is already ``(z, y, x)``.
* numpy (``.npy``, ``.npy.gz``) stores no geometry: its spacing is unknown (``None``).

Multi-channel volumes (NIfTI ``(i, j, k, c)``, ITK 4D or vector images, numpy ``(C, Z, Y, X)``, e.g. the T2 and
ADC channels of MSD Task05_Prostate) are read one channel at a time: ``read_volume(path, channel=0)``.

Arrays are returned in the file's own axis order; :mod:`prokd.data.orientation` brings them to the canonical one.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from prokd.config import plain

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".npy", ".npy.gz")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ITK_SUFFIXES = (".mha", ".mhd", ".nrrd")

Triple = tuple[float, float, float]
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
# nibabel's ImageFileError and HeaderDataError are plain Exceptions; SimpleITK raises RuntimeError.
_READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, zlib.error, nib.filebasedimages.ImageFileError)
_WRITE_ERRORS = (ValueError, TypeError, RuntimeError, nib.spatialimages.HeaderDataError)


class VolumeError(ValueError):
    """A volume file cannot be read or written; the message is one line, ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{path}: {self.problem}")


def non_finite_problem(image: np.ndarray) -> str | None:
    """``"N voxels are NaN or infinite"`` when ``image`` has any, else None (the problem half of an error message)."""
    count = image.size - int(np.count_nonzero(np.isfinite(image)))
    return f"{count} voxels are NaN or infinite" if count else None


@dataclass(frozen=True)
class NiftiTransforms:
    """The raw NIfTI-1 header fields that define orientation, kept to write a NIfTI file back unchanged.

    Attributes:
        qform_code, sform_code: NIfTI transform codes (0 = unknown, 1 = scanner, 2 = aligned, ...).
        quatern: ``(quatern_b, quatern_c, quatern_d)`` of the qform rotation.
        qoffset: ``(qoffset_x, qoffset_y, qoffset_z)``, the qform translation in RAS mm.
        qfac: ``pixdim[0]``, the handedness of the qform (-1 or 1; 0 is read as 1).
        srow: the three sform rows ``srow_x, srow_y, srow_z`` concatenated (12 values, RAS mm).
        zooms: ``pixdim[1:4]``, the voxel size along ``(i, j, k)``.
        xyzt_units: the header's unit code.
    """

    qform_code: int
    sform_code: int
    quatern: Triple
    qoffset: Triple
    qfac: float
    srow: tuple[float, ...]
    zooms: Triple
    xyzt_units: int

    @classmethod
    def from_header(cls, header: nib.Nifti1Header) -> NiftiTransforms:
        return cls(
            qform_code=int(header["qform_code"]),
            sform_code=int(header["sform_code"]),
            quatern=_floats(header[f"quatern_{a}"] for a in "bcd"),
            qoffset=_floats(header[f"qoffset_{a}"] for a in "xyz"),
            qfac=float(header["pixdim"][0]),
            srow=_floats(np.concatenate([header[f"srow_{a}"] for a in "xyz"])),
            zooms=_floats(header["pixdim"][1:4]),
            xyzt_units=int(header["xyzt_units"]),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NiftiTransforms:
        return cls(
            qform_code=int(data["qform_code"]),
            sform_code=int(data["sform_code"]),
            quatern=_floats(data["quatern"]),
            qoffset=_floats(data["qoffset"]),
            qfac=float(data["qfac"]),
            srow=_floats(data["srow"]),
            zooms=_floats(data["zooms"]),
            xyzt_units=int(data["xyzt_units"]),
        )

    def apply_to(self, header: nib.Nifti1Header) -> None:
        """Write these fields into ``header``."""
        header["pixdim"][1:4] = self.zooms
        header["qform_code"] = self.qform_code
        header["sform_code"] = self.sform_code
        for axis, value in zip("bcd", self.quatern):
            header[f"quatern_{axis}"] = value
        for axis, value in zip("xyz", self.qoffset):
            header[f"qoffset_{axis}"] = value
        header["pixdim"][0] = self.qfac
        for row, axis in enumerate("xyz"):
            header[f"srow_{axis}"] = self.srow[4 * row : 4 * row + 4]
        header["xyzt_units"] = self.xyzt_units


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of a ``(Z, Y, X)`` array lie in the world.

    Attributes:
        spacing: voxel size in mm in array-axis order ``(z, y, x)``; ``None`` when unknown (numpy files).
        origin: LPS world position in mm of the centre of voxel ``array[0, 0, 0]``, ordered ``(x, y, z)``.
        direction: ITK direction cosines, a row-major 3x3 matrix whose column ``c`` is the LPS world
            direction of image index axis ``c`` in ITK order ``(i, j, k)``, i.e. of array axis ``2 - c``.
        nifti: the raw NIfTI orientation fields when the volume was read from NIfTI, else ``None``.
    """

    spacing: Triple | None = None
    origin: Triple = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    nifti: NiftiTransforms | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, floats, ints, None), e.g. for checkpoints."""
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        nifti = data.get("nifti")
        return cls(
            spacing=None if data.get("spacing") is None else _floats(data["spacing"]),
            origin=_floats(data["origin"]),
            direction=_floats(data["direction"]),
            nifti=None if nifti is None else NiftiTransforms.from_dict(nifti),
        )

    def same_grid(self, other: Geometry, tol: float = 1e-4) -> bool:
        """True when spacing (both unknown, or equal), origin and direction agree within ``tol``."""
        if (self.spacing is None) != (other.spacing is None):
            return False
        pairs = [(self.origin, other.origin), (self.direction, other.direction)]
        if self.spacing is not None:
            pairs.append((self.spacing, other.spacing))
        return all(np.allclose(a, b, rtol=0.0, atol=tol) for a, b in pairs)

    def itk_spacing(self) -> Triple:
        """Spacing in ITK order ``(x, y, z)``, 1 mm per axis when unknown."""
        return (1.0, 1.0, 1.0) if self.spacing is None else self.spacing[::-1]

    def ras_affine(self) -> np.ndarray:
        """The ``(4, 4)`` NIfTI affine mapping index ``(i, j, k, 1)`` to RAS world mm."""
        rotation_scale = np.reshape(self.direction, (3, 3)) * np.asarray(self.itk_spacing())
        affine = np.eye(4)
        affine[:3, :3] = _LPS_FROM_RAS @ rotation_scale
        affine[:3, 3] = _LPS_FROM_RAS @ np.asarray(self.origin)
        return affine


def volume_suffix(path: str | Path) -> str:
    """The supported suffix of ``path`` (lower case, ``".nii.gz"`` and ``".npy.gz"`` kept whole).

    Raises:
        VolumeError: the file type is not one of :data:`SUPPORTED_SUFFIXES`.
    """
    name = Path(path).name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise VolumeError(path, f"unsupported file type (supported: {', '.join(SUPPORTED_SUFFIXES)})")


def read_volume(path: str | Path, channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a 3D volume as a ``(Z, Y, X)`` array in the file's dtype (native byte order) and its geometry.

    Args:
        path: the volume file.
        channel: the channel to read from a multi-channel volume (NIfTI ``(i, j, k, c)``, ITK time points or
            vector components, numpy ``(C, Z, Y, X)``). ``None`` accepts a 3D volume or a single channel; a
            3D volume is its own channel 0.

    Raises:
        VolumeError: the file is missing, of an unsupported type, unreadable, not a 3D volume or one channel,
            a multi-channel volume without ``channel``, or ``channel`` out of range.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if not path.is_file():
        raise VolumeError(path, "file not found")
    reader = _read_nifti if suffix in _NIFTI_SUFFIXES else _read_itk if suffix in _ITK_SUFFIXES else _read_numpy
    try:
        array, geometry = reader(path)
    except _READ_ERRORS as err:
        raise VolumeError(path, f"cannot read {suffix} file ({_reason(err)})") from err
    array = _one_channel(path, array, channel)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")), geometry


def _one_channel(path: Path, array: np.ndarray, channel: int | None) -> np.ndarray:
    """The ``(Z, Y, X)`` channel ``channel`` of a ``(Z, Y, X)`` or ``(C, Z, Y, X)`` array."""
    if array.ndim == 2:
        raise VolumeError(path, f"is a 2D image of shape {array.shape}; expected a 3D volume (slices, rows, cols)")
    if array.ndim not in (3, 4):
        raise VolumeError(path, f"has shape {array.shape}; expected a 3D volume (slices, rows, cols) or one channel")
    channels = 1 if array.ndim == 3 else array.shape[0]
    if channel is None and channels > 1:
        raise VolumeError(
            path,
            f"has {channels} channels (shape (channels, slices, rows, cols) = {array.shape}); choose one with "
            "--channel N (run config key preprocess.channel), e.g. 0 for T2 in MSD Task05_Prostate",
        )
    if channel is not None and not 0 <= channel < channels:
        raise VolumeError(path, f"has {channels} channel(s) (shape {array.shape}); channel {channel} does not exist")
    return array if array.ndim == 3 else array[channel or 0]


def write_volume(path: str | Path, array: np.ndarray, geometry: Geometry, *, overwrite: bool = False) -> Path:
    """Write a ``(Z, Y, X)`` array with ``geometry`` in the format given by the suffix of ``path``.

    The format may differ from the one the geometry was read from: numpy formats drop the geometry,
    and an unknown spacing is written to NIfTI/ITK formats as 1 mm. Boolean masks are written as
    uint8. The file is written to a temporary folder next to ``path`` and moved into place, so a
    reader never sees a partial file. Parent folders are created.

    Returns:
        ``path``.

    Raises:
        FileExistsError: ``path`` (or, for ``.mhd``, its data file) exists and ``overwrite`` is False.
        VolumeError: the suffix is unsupported, the array is not 3D, or the format cannot store its dtype.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if np.ndim(array) != 3:
        raise VolumeError(path, f"cannot write an array of shape {np.shape(array)}; expected 3D (Z, Y, X)")
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    writer = _write_nifti if suffix in _NIFTI_SUFFIXES else _write_itk if suffix in _ITK_SUFFIXES else _write_numpy
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as staging:
        staged = Path(staging) / path.name
        try:
            writer(staged, array, geometry)
        except _WRITE_ERRORS as err:
            raise VolumeError(path, f"cannot write a {array.dtype} array as {suffix} ({_reason(err)})") from err
        _move_into_place(staged, path, overwrite)
    return path


def _read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    """The data array ``(i, j, k)`` or ``(i, j, k, c)`` transposed to ``(Z, Y, X)`` or ``(C, Z, Y, X)``."""
    image = nib.load(path, mmap=False)
    data = np.asanyarray(image.dataobj)
    return data.transpose(*range(data.ndim)[::-1]), _nifti_geometry(image.header)


def _nifti_geometry(header: nib.Nifti1Header) -> Geometry:
    """Spacing from the zooms, origin and direction from nibabel's best affine (sform, else qform)."""
    affine = header.get_best_affine()
    columns = _LPS_FROM_RAS @ affine[:3, :3]
    return Geometry(
        spacing=_floats(header.get_zooms()[:3][::-1]),
        origin=_floats(_LPS_FROM_RAS @ affine[:3, 3]),
        direction=_floats((columns / np.linalg.norm(columns, axis=0)).ravel()),
        nifti=NiftiTransforms.from_header(header),
    )


def _read_itk(path: Path) -> tuple[np.ndarray, Geometry]:
    """``GetArrayFromImage`` is ``(z, y, x)``, ``(t, z, y, x)`` for 4D images and ``(z, y, x, components)`` for
    vector voxels, whose components are moved first; the geometry is that of the first three axes."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    dimension = image.GetDimension()
    if array.ndim == dimension + 1:
        array = np.moveaxis(array, -1, 0)
    direction = np.reshape(image.GetDirection(), (dimension, dimension))[:3, :3]
    geometry = Geometry(
        spacing=_floats(image.GetSpacing()[:3][::-1]),
        origin=_floats(image.GetOrigin()[:3]),
        direction=_floats(direction.ravel()),
    )
    return array, geometry


def _read_numpy(path: Path) -> tuple[np.ndarray, Geometry]:
    """``numpy.load`` (through gzip for ``.npy.gz``): ``(Z, Y, X)`` or ``(C, Z, Y, X)``."""
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as stream:
            array = np.load(stream, allow_pickle=False)
    else:
        array = np.load(path, allow_pickle=False)
    return array, Geometry()


def _write_nifti(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """Reuse the raw NIfTI fields when they still describe ``geometry``, else set qform = sform from it."""
    image = nib.Nifti1Image(array.transpose(2, 1, 0), affine=None, dtype=array.dtype)
    header = image.header
    if geometry.nifti is not None:
        geometry.nifti.apply_to(header)
    if _nifti_geometry(header) != geometry:
        affine = geometry.ras_affine()
        header.set_qform(affine, code=1)
        header.set_sform(affine, code=1)
        header.set_zooms(geometry.itk_spacing())
        header.set_xyzt_units("mm")
    nib.save(image, path)


def _write_itk(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing(geometry.itk_spacing())
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(path), useCompression=True)


def _write_numpy(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    if path.name.lower().endswith(".gz"):
        with gzip.GzipFile(path, "wb", mtime=0) as stream:
            np.save(stream, array, allow_pickle=False)
    else:
        np.save(path, array, allow_pickle=False)


def _move_into_place(staged: Path, path: Path, overwrite: bool) -> None:
    """Move every file written next to ``staged`` into ``path``'s folder, ``staged`` itself last."""
    companions = sorted(p for p in staged.parent.iterdir() if p != staged)
    targets = [(source, path.parent / source.name) for source in [*companions, staged]]
    if not overwrite:
        existing = next((target for _, target in targets if target.exists()), None)
        if existing is not None:
            raise FileExistsError(f"{existing}: already exists (pass overwrite=True to replace it)")
    for source, target in targets:
        os.replace(source, target)


def _reason(err: Exception) -> str:
    """The library's message without SimpleITK's source-file prefix."""
    return str(err).rsplit("ERROR:", 1)[-1].strip()


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


