"""Synthetic multi-site T2-weighted prostate MRI phantom: the package's offline default data set.

Each case is an axial T2-like volume of a male pelvis with a whole-gland prostate mask. The anatomy is
drawn in millimetres around the gland centre and then sampled on the grid of a simulated site, so the same
kind of patient looks different on every "scanner":

* anatomy (per case): body outline with subcutaneous fat, fat septa and muscle groups, obturator internus
  and levator ani, femoral heads and pubic bones (dark cortex around fatty marrow), rectum (dark wall,
  air, fluid or an endorectal-coil balloon in its lumen), seminal vesicles, urine-filled bladder above and
  in front of the gland, and the gland itself: a tapered, tilted, smoothly deformed ellipsoid with a bright
  peripheral zone, a darker nodular transition zone and a hypointense capsule;
* site (per :class:`SiteStyle`): raw intensity scale and clipping, tissue contrast, Rician noise level,
  smooth multiplicative bias field (plus the near-coil boost of an endorectal coil), in-plane spacing and
  matrix (hence field of view and apparent gland size in pixels), slice count and thickness.

The gland's intensities overlap those of fat, muscle, seminal vesicles and bladder, so the mask cannot be
found by thresholding; it is delimited by its capsule, its texture and its position between bladder,
rectum, pubis and pelvic side walls, as on real T2-weighted images.

Volumes are numpy arrays (Z, Y, X) = (slices, rows, cols); row 0 is anterior, and z (slice index) runs
from the apex (inferior) towards the base and bladder (superior). On disk (:func:`write_phantom`) the
NIfTI data array is ``array.transpose(2, 1, 0)`` with affine ``diag(sx, sy, sz, 1)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["PHANTOM_VERSION", "SITES", "PhantomCase", "SiteStyle", "make_case", "write_phantom"]

PHANTOM_VERSION = 2
"""Version of the generator; part of the provenance record in ``dataset.json``."""

# Relative T2-weighted intensities (fat = 1), before the site's contrast, bias, scale and noise.
AIR = 0.0
GAS = 0.03
FAT = 1.0
SEPTUM = 0.5
MUSCLE = 0.28
CORTEX = 0.05
MARROW = 0.72
URINE = 1.35
WALL = 0.3
MUCOSA = 0.55
FLUID = 1.1
SEMINAL_FLUID = 1.0
PLEXUS = 0.85
PERIPHERAL_ZONE = 0.8
TRANSITION_ZONE = 0.45
CAPSULE = 0.22

_MAX_DEFORMATION = 0.15
"""Largest relative displacement of the gland surface by its random shape deformation."""
_DEFORMED_SHELL = 1.4 * (1 + _MAX_DEFORMATION)
"""Undeformed gland radius inside which the surface deformation is evaluated."""
_MIN_COVERAGE_MM = 45.0
"""Smallest slab (slices x thickness) a site may acquire: room for a gland plus empty end slices."""


@dataclass(frozen=True)
class SiteStyle:
    """How one simulated scanner and protocol renders the anatomy.

    Attributes:
        name: site label written to the datalist.
        intensity_scale: raw value of fat (the reference tissue) before bias and noise; each case jitters
            it by up to +-15 %.
        max_value: largest value the scanner stores; raw intensities are clipped to it (4095 = 12 bit).
        contrast: gamma applied to the relative tissue intensities; above 1 darkens grey tissues
            relative to fat and urine, below 1 flattens the contrast.
        noise: standard deviation of the Rician noise as a fraction of ``intensity_scale``.
        bias_strength: standard deviation of the log of the smooth multiplicative bias field.
        endorectal_coil: an inflated endorectal-coil balloon fills the rectum and boosts the signal near it.
        spacing_range: (min, max) in-plane pixel spacing in mm, drawn per case.
        matrix: in-plane size in pixels; images are ``matrix x matrix``.
        slices_range: (min, max) number of slices, drawn per case.
        slice_thickness: slice spacing in mm (z).
    """

    name: str
    intensity_scale: float
    max_value: int
    contrast: float
    noise: float
    bias_strength: float
    endorectal_coil: bool
    spacing_range: tuple[float, float]
    matrix: int
    slices_range: tuple[int, int]
    slice_thickness: float

    def __post_init__(self) -> None:
        low_spacing, high_spacing = self.spacing_range
        fewest, most = self.slices_range
        checks = (
            (min(self.intensity_scale, self.contrast, self.slice_thickness) > 0,
             "intensity_scale, contrast and slice_thickness must be positive"),
            (min(self.noise, self.bias_strength) >= 0, "noise and bias_strength must be >= 0"),
            (1 <= self.max_value <= 32767, "max_value must be in [1, 32767] (images are int16)"),
            (0 < low_spacing <= high_spacing, "spacing_range must satisfy 0 < min <= max"),
            (self.matrix >= 32, "matrix must be >= 32"),
            (1 <= fewest <= most, "slices_range must satisfy 1 <= min <= max"),
            (fewest * self.slice_thickness >= _MIN_COVERAGE_MM,
             f"slices must cover at least {_MIN_COVERAGE_MM:g} mm to hold a gland with empty apex and base slices"),
        )  # fmt: skip
        for valid, problem in checks:
            if not valid:
                raise ValueError(f"site style {self.name!r}: {problem}")

    @property
    def field_of_view_mm(self) -> tuple[float, float]:
        """Smallest and largest in-plane field of view of this site, in mm."""
        return self.matrix * self.spacing_range[0], self.matrix * self.spacing_range[1]


SITES: tuple[SiteStyle, ...] = (
    SiteStyle("SiteA", 280.0, 32767, 1.0, 0.05, 0.15, False, (0.52, 0.56), 160, (16, 20), 3.6),
    SiteStyle("SiteB", 5500.0, 32767, 1.25, 0.025, 0.2, True, (0.75, 0.8), 192, (20, 24), 3.0),
    SiteStyle("SiteC", 900.0, 32767, 0.8, 0.04, 0.3, False, (0.78, 0.84), 128, (14, 18), 4.0),
    SiteStyle("SiteD", 2600.0, 4095, 1.1, 0.06, 0.2, False, (0.68, 0.74), 176, (18, 22), 3.3),
)
"""Four sites modelled loosely on the PROMISE12 centres: fields of view from ~85 to ~150 mm, raw ranges
from 0..~400 to 0..~20000, one with an endorectal coil, one 12-bit scanner."""


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic case.

    Attributes:
        image: (Z, Y, X) int16 raw-like T2 intensities.
        label: (Z, Y, X) uint8 whole-gland mask in {0, 1}.
        spacing: (z, y, x) voxel spacing in mm.
        site: name of the :class:`SiteStyle` that rendered it.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    site: str


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm around the gland centre, broadcastable to (Z, Y, X)."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.z.shape[0], self.y.shape[1], self.x.shape[2]


def make_case(style: SiteStyle, rng: np.random.Generator) -> PhantomCase:
    """Draw one patient and render it as ``style``'s scanner would.

    Args:
        style: the site's acquisition and intensity characteristics.
        rng: source of all randomness; the same generator state gives a byte-identical case.

    Returns:
        a :class:`PhantomCase` whose label is non-empty on a contiguous middle range of slices, with at
        least one empty slice below the apex and one above the base.
    """
    spacing_yx = round(float(rng.uniform(*style.spacing_range)), 3)
    slices = int(rng.integers(style.slices_range[0], style.slices_range[1] + 1))
    gland = _draw_gland(rng, coverage_mm=slices * style.slice_thickness, slice_mm=style.slice_thickness)
    grid = _make_grid(rng, style, slices, spacing_yx)
    anatomy = _render_anatomy(rng, grid, gland, style.endorectal_coil)
    image = _acquire(rng, grid, anatomy, style)
    return PhantomCase(image, anatomy.label, (style.slice_thickness, spacing_yx, spacing_yx), style.name)


def write_phantom(
    out_dir: str | Path,
    cases_per_site: int = 6,
    unlabeled_per_site: int = 2,
    seed: int = 0,
    sites: Sequence[SiteStyle] | None = None,
) -> Path:
    """Write a phantom data set as NIfTI files plus a MONAI-style datalist, and return the datalist path.

    Layout under ``out_dir``: ``imagesTr/<id>.nii.gz`` and ``labelsTr/<id>.nii.gz`` for labeled cases,
    ``imagesUn/<id>.nii.gz`` for unlabeled ones, and ``dataset.json`` with ``training`` entries
    ``{"case", "site", "image", "label"}``, ``unlabeled`` entries ``{"case", "site", "image"}`` (paths
    relative to ``out_dir``; images for training without labels, not test images, see
    :mod:`prokd.data.datalist`) and a ``phantom`` record of the arguments. Case ids are ``<site>_<nnn>`` (labeled) and ``<site>_U<nnn>`` (unlabeled).

    Each case has its own generator seeded by (``seed``, site name, labeled or not, index), so a case
    does not change when the number of cases or the list of sites changes.

    ``out_dir`` must be empty or missing, except that a folder already holding the phantom of the same
    arguments (same ``dataset.json`` record, all files present) is reused as is; anything else raises
    :class:`FileExistsError` rather than mixing data sets. ``dataset.json`` is written last, so an
    interrupted run is never mistaken for a complete one.

    Args:
        out_dir: destination folder.
        cases_per_site: labeled cases per site (>= 1).
        unlabeled_per_site: unlabeled cases per site (>= 0).
        seed: non-negative base seed.
        sites: site styles to render (unique names); defaults to :data:`SITES`.
    """
    out_dir = Path(out_dir)
    sites = tuple(SITES if sites is None else sites)
    if cases_per_site < 1 or unlabeled_per_site < 0 or seed < 0:
        raise ValueError(
            f"{out_dir}: need cases_per_site >= 1, unlabeled_per_site >= 0 and seed >= 0, got "
            f"{cases_per_site}, {unlabeled_per_site} and {seed}"
        )
    names = [style.name for style in sites]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{out_dir}: sites must be a non-empty list with unique names, got {names}")
    datalist_path = out_dir / "dataset.json"
    record = _provenance(cases_per_site, unlabeled_per_site, seed, sites)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if _holds_phantom(datalist_path, record):
            return datalist_path
        raise FileExistsError(
            f"{out_dir}: not an empty folder and holds no phantom made with these arguments; use an empty folder"
        )
    training = [
        _write_entry(out_dir, style, index, seed, labeled=True)
        for style in sites
        for index in range(cases_per_site)
    ]
    unlabeled = [
        _write_entry(out_dir, style, index, seed, labeled=False)
        for style in sites
        for index in range(unlabeled_per_site)
    ]
    datalist = {
        "name": "prokd synthetic prostate phantom",
        "description": "Synthetic multi-site T2-weighted pelvis MRI with whole-gland prostate masks.",
        "modality": {"0": "T2"},
        "labels": {"0": "background", "1": "prostate"},
        "phantom": record,
        "training": training,
        "unlabeled": unlabeled,
    }
    datalist_path.write_text(json.dumps(datalist, indent=1))
    return datalist_path


def _provenance(cases_per_site: int, unlabeled_per_site: int, seed: int, sites: Sequence[SiteStyle]) -> dict:
    """The arguments that define a phantom, as plain JSON types (tuples become lists)."""
    record = {
        "generator": __name__,
        "version": PHANTOM_VERSION,
        "seed": seed,
        "cases_per_site": cases_per_site,
        "unlabeled_per_site": unlabeled_per_site,
        "sites": [dataclasses.asdict(style) for style in sites],
    }
    return json.loads(json.dumps(record))


def _holds_phantom(datalist_path: Path, record: dict) -> bool:
    """Whether ``datalist_path`` lists a complete phantom made with the arguments in ``record``."""
    try:
        datalist = json.loads(datalist_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(datalist, dict) or datalist.get("phantom") != record:
        return False
    entries = datalist.get("training", []) + datalist.get("unlabeled", [])
    files = [entry[key] for entry in entries for key in ("image", "label") if key in entry]
    return all((datalist_path.parent / name).is_file() for name in files)


def _write_entry(out_dir: Path, style: SiteStyle, index: int, seed: int, labeled: bool) -> dict[str, Any]:
    """Generate one case, save it as NIfTI and return its datalist entry."""
    rng = np.random.default_rng([seed, zlib.crc32(style.name.encode()), int(labeled), index])
    case = make_case(style, rng)
    case_id = f"{style.name}_{index:03d}" if labeled else f"{style.name}_U{index:03d}"
    entry: dict[str, Any] = {"case": case_id, "site": style.name}
    image_folder = "imagesTr" if labeled else "imagesUn"
    entry["image"] = _save_nifti(case.image, case.spacing, out_dir, f"{image_folder}/{case_id}")
    if labeled:
        entry["label"] = _save_nifti(case.label, case.spacing, out_dir, f"labelsTr/{case_id}")
    return entry


def _save_nifti(array: np.ndarray, spacing: tuple[float, float, float], out_dir: Path, stem: str) -> str:
    """Save (Z, Y, X) ``array`` as ``out_dir/stem.nii.gz``: data axes reversed, affine diag(-sx, -sy, sz, 1), i.e.
    x towards the patient's left, y posterior (the rectum lies at larger y) and z superior, the canonical
    orientation of :mod:`prokd.data.orientation`, so the arrays are read back as generated."""
    relative = f"{stem}.nii.gz"
    path = out_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array.transpose(2, 1, 0), np.diag([-spacing[2], -spacing[1], spacing[0], 1.0]))
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return relative


def _make_grid(rng: np.random.Generator, style: SiteStyle, slices: int, spacing_yx: float) -> _Grid:
    """Voxel centres in mm: slices centred on z = 0, the field of view a little posterior to the gland."""
    centred = (np.arange(style.matrix, dtype=np.float32) - (style.matrix - 1) / 2) * spacing_yx
    z = (np.arange(slices, dtype=np.float32) - (slices - 1) / 2) * style.slice_thickness
    y = centred + np.float32(rng.uniform(0.0, 10.0))
    x = centred + np.float32(rng.uniform(-5.0, 5.0))
    return _Grid(z=z[:, None, None], y=y[None, :, None], x=x[None, None, :])


@dataclass(frozen=True)
class _Gland:
    """Random gland shape and pose, in mm and radians.

    Attributes:
        center: (z, y, x); in-plane near the origin of the anatomy frame.
        semi_axes: (z, y, x) semi-axes of the undeformed ellipsoid in its own frame.
        yaw: in-plane rotation.
        tilt: sagittal rotation (base tipped anteriorly or posteriorly).
        taper: the cross-section scales by ``1 + taper * t`` from apex (t = -1) to base (t = 1).
        deformation: largest relative displacement of the surface.
        coefficients: weights of :func:`_direction_monomials`, scaled so that their combination peaks at 1
            in absolute value on the unit sphere.
    """

    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    yaw: float
    tilt: float
    taper: float
    deformation: float
    coefficients: np.ndarray


def _draw_gland(rng: np.random.Generator, coverage_mm: float, slice_mm: float) -> _Gland:
    """Random gland of about 15-50 mL whose z extent ends at least half a millimetre short of the outer slice centres.

    Glands too long for the slab are shrunk along z to fit; the centre is placed at random in the room left.
    """
    semi_z, semi_y, semi_x = rng.uniform(14.0, 21.0), rng.uniform(13.0, 21.0), rng.uniform(19.0, 28.0)
    tilt, taper, deformation = rng.uniform(-0.25, 0.25), rng.uniform(0.05, 0.25), rng.uniform(0.06, _MAX_DEFORMATION)
    room = coverage_mm / 2 - slice_mm / 2 - 0.5
    oblique = semi_y * (1 + taper) * abs(math.sin(tilt))
    along = min(semi_z * math.cos(tilt), math.sqrt(max((room / (1 + deformation)) ** 2 - oblique**2, 0.0)))
    semi_z = along / math.cos(tilt)
    half_length = (1 + deformation) * math.hypot(along, oblique)
    coefficients = rng.standard_normal(16)
    sphere = _fibonacci_sphere(2000)
    coefficients /= np.abs(np.tensordot(coefficients, np.stack(_direction_monomials(*sphere)), axes=1)).max()
    return _Gland(
        center=(rng.uniform(-0.6, 0.6) * max(room - half_length, 0.0), rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)),
        semi_axes=(semi_z, semi_y, semi_x),
        yaw=rng.uniform(-0.2, 0.2),
        tilt=tilt,
        taper=taper,
        deformation=deformation,
        coefficients=coefficients,
    )


def _fibonacci_sphere(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` nearly uniform points (z, y, x) on the unit sphere (golden-angle spiral)."""
    z = 1 - (2 * np.arange(count) + 1) / count
    ring = np.sqrt(1 - z**2)
    angle = np.pi * (3 - np.sqrt(5)) * np.arange(count)
    return z, ring * np.sin(angle), ring * np.cos(angle)


def _direction_monomials(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
    """16 monomials of degree 1 to 3 in the components of a unit vector, none constant on the sphere."""
    return [u, v, w, u * v, u * w, v * w, u * u - w * w, v * v - w * w,
            u**3, v**3, w**3, u * v * w, u * u * v, u * u * w, v * v * u, w * w * u]  # fmt: skip


def _local(
    grid: _Grid, center: Sequence[float], yaw: float = 0.0, tilt: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (z, y, x) in mm relative to ``center``: rotated by ``yaw`` in-plane, then ``tilt`` sagittally."""
    dz, dy, dx = grid.z - center[0], grid.y - center[1], grid.x - center[2]
    x = math.cos(yaw) * dx + math.sin(yaw) * dy
    y = -math.sin(yaw) * dx + math.cos(yaw) * dy
    return math.cos(tilt) * dz - math.sin(tilt) * y, math.cos(tilt) * y + math.sin(tilt) * dz, x


def _radius(local: Sequence[np.ndarray], semi_axes: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoid radius of ``local`` coordinates: < 1 inside the ellipsoid with ``semi_axes``."""
    return np.sqrt(sum((axis / semi) ** 2 for axis, semi in zip(local, semi_axes)))


def _ellipse_radius(grid: _Grid, center_yx: Sequence[Any], semi_axes_yx: Sequence[float]) -> np.ndarray:
    """Normalised radius of an elliptic cylinder along z; the centre may vary with z (arrays of shape (Z, 1, 1))."""
    return np.sqrt(((grid.y - center_yx[0]) / semi_axes_yx[0]) ** 2 + ((grid.x - center_yx[1]) / semi_axes_yx[1]) ** 2)


def _gland_radius(grid: _Grid, gland: _Gland) -> np.ndarray:
    """Normalised radius (Z, Y, X) of the gland surface: the gland is ``radius < 1``.

    The ellipsoid is tapered from apex to base, then its surface is displaced by a cubic polynomial of
    the direction only, so the gland stays star-shaped: connected, on one contiguous range of slices.
    The displacement is evaluated where the undeformed radius is below ``_DEFORMED_SHELL``, which covers
    every deformed radius up to 1.4; farther out the undeformed radius is returned.
    """
    z, y, x = _local(grid, gland.center, gland.yaw, gland.tilt)
    widening = 1 + gland.taper * np.clip(z / gland.semi_axes[0], -1, 1)
    scaled = (z / gland.semi_axes[0], y / (widening * gland.semi_axes[1]), x / (widening * gland.semi_axes[2]))
    radius = np.sqrt(sum(axis**2 for axis in scaled))
    near = radius < _DEFORMED_SHELL
    direction = [axis[near] / np.maximum(radius[near], 1e-6) for axis in scaled]
    polynomial = sum(c * m for c, m in zip(gland.coefficients.astype(np.float32), _direction_monomials(*direction)))
    radius[near] /= 1 + gland.deformation * polynomial
    return radius


def _smooth_field(rng: np.random.Generator, grid: _Grid, correlation_mm: float) -> np.ndarray:
    """Smooth Gaussian random field (Z, Y, X) with zero mean and unit variance at every voxel.

    A lattice of independent standard normals ``correlation_mm`` apart is blended by Gaussian radial basis
    functions of that width. The blend is separable (three small matrix products), and each axis' weights
    are normalised to unit length, which makes the variance exactly 1 everywhere.
    """
    weights = []
    for centres in (grid.z.ravel(), grid.y.ravel(), grid.x.ravel()):
        lattice = np.arange(centres.min() - 3 * correlation_mm, centres.max() + 3 * correlation_mm, correlation_mm)
        axis = np.exp(-0.5 * ((centres[:, None] - lattice[None, :]) / correlation_mm) ** 2)
        weights.append((axis / np.linalg.norm(axis, axis=1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal(tuple(w.shape[1] for w in weights), dtype=np.float32)
    return np.einsum("abc,za,yb,xc->zyx", coarse, *weights, optimize=True)


def _texture(rng: np.random.Generator, shape: tuple[int, int, int], grain_px: float) -> np.ndarray:
    """Fine in-plane texture (Z, Y, X): white noise blurred per slice by ``grain_px``, unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0, grain_px, grain_px))
    return noise / noise.std()


class _Canvas:
    """Relative T2 intensities (Z, Y, X) painted structure by structure, each over the previous ones.

    Two shared unit-variance textures are available: ``fine`` (~1 mm grain) and ``coarse`` (~3 mm, nodules).
    """

    def __init__(self, rng: np.random.Generator, grid: _Grid) -> None:
        spacing_yx = float(grid.y[0, 1, 0] - grid.y[0, 0, 0])
        self.tissue = np.full(grid.shape, AIR, dtype=np.float32)
        self.fine = _texture(rng, grid.shape, grain_px=0.6 / spacing_yx)
        self.coarse = _texture(rng, grid.shape, grain_px=1.5 / spacing_yx)

    def paint(self, mask: np.ndarray, level: float, fine: float = 0.0, coarse: float = 0.0) -> None:
        """Set ``mask`` to ``level * (1 + fine * fine_texture + coarse * coarse_texture)``."""
        mask = np.broadcast_to(mask, self.tissue.shape)
        self.tissue[mask] = level * (1 + fine * self.fine[mask] + coarse * self.coarse[mask])


@dataclass(frozen=True)
class _Anatomy:
    """Rendered patient: ``tissue`` (Z, Y, X) relative T2 intensities >= 0, ``label`` (Z, Y, X) uint8
    gland mask, ``rectal_distance`` (Z, Y, X) approximate distance in mm from the rectal axis, which sets
    the near-coil signal boost."""

    tissue: np.ndarray
    label: np.ndarray
    rectal_distance: np.ndarray


def _render_anatomy(rng: np.random.Generator, grid: _Grid, gland: _Gland, endorectal_coil: bool) -> _Anatomy:
    """Paint the pelvis from the outside in (body, side walls and bones, periprostatic plexus, bladder,
    seminal vesicles behind it, rectum) and the gland last, so bladder and rectum may touch its capsule."""
    canvas = _Canvas(rng, grid)
    _paint_body(rng, grid, canvas, gland)
    _paint_pelvic_walls(rng, grid, canvas, gland)
    radius = _gland_radius(grid, gland)
    canvas.paint((radius >= 1) & (radius < 1 + 4.0 / gland.semi_axes[1]), PLEXUS, fine=0.15, coarse=0.2)
    _paint_bladder(rng, grid, canvas, gland)
    _paint_seminal_vesicles(rng, grid, canvas, gland)
    rectal_distance = _paint_rectum(rng, grid, canvas, gland, endorectal_coil)
    label = radius < 1
    _paint_gland(rng, grid, canvas, gland, label, radius)
    return _Anatomy(np.clip(canvas.tissue, 0, None), label.astype(np.uint8), rectal_distance)


def _paint_body(rng: np.random.Generator, grid: _Grid, canvas: _Canvas, gland: _Gland) -> None:
    """Body outline filled with fat crossed by thin septa and vessels, scattered muscle bundles, and the
    anterior abdominal wall (rectus muscles under 10-22 mm of subcutaneous fat)."""
    semi_y, semi_x = rng.uniform(110.0, 130.0), rng.uniform(160.0, 190.0)
    skin = gland.center[1] - gland.semi_axes[1] - rng.uniform(40.0, 65.0)
    body = _ellipse_radius(grid, (skin + semi_y, 0.0), (semi_y, semi_x))
    canvas.paint(body < 1, FAT, fine=0.06)
    canvas.paint((body < 1) & (np.abs(_smooth_field(rng, grid, 8.0)) < 0.07), SEPTUM, fine=0.1)
    canvas.paint((body < 1) & (_smooth_field(rng, grid, 10.0) > 1.4), MUSCLE, fine=0.12, coarse=0.1)
    fat_depth, wall_depth = rng.uniform(10.0, 22.0), rng.uniform(7.0, 12.0)
    rectus = (body < 1 - fat_depth / semi_y) & (body > 1 - (fat_depth + wall_depth) / semi_y)
    canvas.paint(rectus & (grid.y < skin + semi_y / 2) & (np.abs(grid.x) < rng.uniform(35.0, 50.0)), MUSCLE, fine=0.12)


def _paint_pelvic_walls(rng: np.random.Generator, grid: _Grid, canvas: _Canvas, gland: _Gland) -> None:
    """Left and right gluteus maximus, obturator internus, femoral head and pubic bone."""
    center_z, center_y, center_x = gland.center
    semi_z, semi_y, semi_x = gland.semi_axes
    for side in (-1.0, 1.0):
        gluteus_center = (center_y + semi_y + rng.uniform(30.0, 45.0), center_x + side * rng.uniform(55.0, 75.0))
        gluteus = _ellipse_radius(grid, gluteus_center, (rng.uniform(25.0, 35.0), rng.uniform(30.0, 40.0))) < 1
        canvas.paint(gluteus, MUSCLE, fine=0.12, coarse=0.1)
        muscle_semi = (rng.uniform(22.0, 30.0), rng.uniform(6.0, 9.0))
        muscle_center = (center_y + rng.uniform(-6.0, 4.0), center_x + side * (semi_x + rng.uniform(10.0, 16.0)))
        canvas.paint(_ellipse_radius(grid, muscle_center, muscle_semi) < 1, MUSCLE, fine=0.12, coarse=0.1)
        head = rng.uniform(20.0, 26.0)
        head_center = (
            center_z + rng.uniform(0.0, 12.0),
            muscle_center[0] + rng.uniform(-4.0, 6.0),
            muscle_center[1] + side * (muscle_semi[1] + rng.uniform(4.0, 10.0) + head),
        )
        _paint_bone(rng, grid, canvas, head_center, (1.6 * head, head, head))
        pubis_center = (
            center_z - rng.uniform(0.2, 0.6) * semi_z,
            center_y - semi_y - rng.uniform(12.0, 18.0),
            center_x + side * rng.uniform(9.0, 14.0),
        )
        pubis_semi_axes = (rng.uniform(12.0, 20.0), rng.uniform(6.0, 9.0), rng.uniform(8.0, 12.0))
        _paint_bone(rng, grid, canvas, pubis_center, pubis_semi_axes)


def _paint_bone(
    rng: np.random.Generator, grid: _Grid, canvas: _Canvas, center: Sequence[float], semi_axes: Sequence[float]
) -> None:
    """Ellipsoidal bone: dark cortical shell 1.5-3 mm thick around textured fatty marrow."""
    radius = _radius(_local(grid, center), semi_axes)
    canvas.paint(radius < 1, CORTEX, fine=0.3)
    canvas.paint(radius < 1 - rng.uniform(1.5, 3.0) / min(semi_axes[1:]), MARROW, fine=0.1, coarse=0.15)


def _paint_seminal_vesicles(rng: np.random.Generator, grid: _Grid, canvas: _Canvas, gland: _Gland) -> None:
    """Two convoluted fluid-filled sacs above the base, behind the bladder, in front of the rectum."""
    center_z, center_y, center_x = gland.center
    semi_z, semi_y, _ = gland.semi_axes
    for side in (-1.0, 1.0):
        center = (
            center_z + rng.uniform(0.9, 1.2) * semi_z,
            center_y + rng.uniform(0.5, 0.8) * semi_y,
            center_x + side * rng.uniform(10.0, 16.0),
        )
        semi_axes = (rng.uniform(6.0, 9.0), rng.uniform(4.0, 6.0), rng.uniform(11.0, 15.0))
        vesicle = _radius(_local(grid, center, yaw=-side * rng.uniform(0.3, 0.6)), semi_axes) < 1
        canvas.paint(vesicle, SEMINAL_FLUID, fine=0.1, coarse=0.3)


def _paint_rectum(
    rng: np.random.Generator, grid: _Grid, canvas: _Canvas, gland: _Gland, endorectal_coil: bool
) -> np.ndarray:
    """Levator ani sling and rectum behind the gland; returns the distance (Z, Y, X) in mm from the rectal axis.

    The rectum bends posteriorly away from the gland above and below it. Its lumen holds an endorectal-coil
    balloon (dark, wide) when ``endorectal_coil``, else air, fluid or nothing (collapsed, grey mucosa).
    """
    center_z, center_y, center_x = gland.center
    semi_y, semi_x = gland.semi_axes[1:]
    outer = rng.uniform(20.0, 24.0) if endorectal_coil else rng.uniform(11.0, 17.0)
    semi_axes = (outer, outer * rng.uniform(1.0, 1.3))
    axis_y = center_y + semi_y + rng.uniform(1.0, 5.0) + outer + rng.uniform(0.0, 0.01) * (grid.z - center_z) ** 2
    axis = (axis_y, center_x + rng.uniform(-4.0, 4.0))
    sling_semi = (outer + rng.uniform(3.0, 6.0), max(semi_x, semi_axes[1]) + rng.uniform(4.0, 8.0))
    sling = _ellipse_radius(grid, (axis_y - 0.3 * outer, axis[1]), sling_semi)
    canvas.paint((sling < 1) & (sling > 1 - 3.0 / sling_semi[0]) & (grid.y > center_y), MUSCLE, fine=0.12)
    radius = _ellipse_radius(grid, axis, semi_axes)
    canvas.paint(radius < 1, WALL, fine=0.15)
    lumen = radius < 1 - rng.uniform(3.0, 5.0) / outer
    if endorectal_coil:
        canvas.paint(lumen, GAS, fine=0.5)
    else:
        content = rng.choice(3)
        canvas.paint(lumen, (GAS, FLUID, MUCOSA)[content], fine=(0.5, 0.05, 0.15)[content])
    return radius * outer


def _paint_bladder(rng: np.random.Generator, grid: _Grid, canvas: _Canvas, gland: _Gland) -> None:
    """Urine-filled bladder with a 2-3 mm wall, above and in front of the gland, sometimes touching its base."""
    center_z, center_y, center_x = gland.center
    semi_axes = (rng.uniform(18.0, 28.0), rng.uniform(22.0, 32.0), rng.uniform(25.0, 38.0))
    center = (
        center_z + gland.semi_axes[0] + rng.uniform(0.3, 0.9) * semi_axes[0],
        center_y - rng.uniform(0.1, 0.6) * gland.semi_axes[1],
        center_x + rng.uniform(-5.0, 5.0),
    )
    radius = _radius(_local(grid, center), semi_axes)
    canvas.paint(radius < 1, WALL, fine=0.15)
    canvas.paint(radius < 1 - rng.uniform(2.0, 3.0) / min(semi_axes), URINE, fine=0.03)


def _paint_gland(
    rng: np.random.Generator, grid: _Grid, canvas: _Canvas, gland: _Gland, label: np.ndarray, radius: np.ndarray
) -> None:
    """Bright peripheral zone, darker nodular transition zone (anterior, towards the base), hypointense capsule."""
    center_z, center_y, center_x = gland.center
    semi_z, semi_y, _ = gland.semi_axes
    zone_center = (center_z + 0.25 * semi_z, center_y - 0.3 * semi_y, center_x)
    zone_fraction = rng.uniform(0.5, 0.75)
    zone_semi_axes = tuple(zone_fraction * semi for semi in gland.semi_axes)
    zone = _radius(_local(grid, zone_center, gland.yaw, gland.tilt), zone_semi_axes) < 1
    canvas.paint(label, PERIPHERAL_ZONE, fine=0.08)
    canvas.paint(label & zone, TRANSITION_ZONE, fine=0.1, coarse=0.3)
    canvas.paint(label & (radius > 1 - rng.uniform(1.0, 2.0) / semi_y), CAPSULE, fine=0.15)


def _acquire(rng: np.random.Generator, grid: _Grid, anatomy: _Anatomy, style: SiteStyle) -> np.ndarray:
    """Image the anatomy as ``style``'s scanner: (Z, Y, X) int16 raw intensities.

    In-plane partial-volume blur, contrast gamma, smooth multiplicative bias field (times the near-coil
    boost of an endorectal coil), per-case scale, Rician noise (magnitude of complex Gaussian noise), and
    rounding and clipping to the scanner's range.
    """
    spacing_yx = float(grid.y[0, 1, 0] - grid.y[0, 0, 0])
    signal = ndimage.gaussian_filter(anatomy.tissue, (0, 0.4 / spacing_yx, 0.4 / spacing_yx)) ** style.contrast
    signal *= np.exp(style.bias_strength * _smooth_field(rng, grid, 70.0))
    if style.endorectal_coil:
        signal *= 1 + rng.uniform(1.5, 3.0) * np.exp(-anatomy.rectal_distance / rng.uniform(15.0, 25.0))
    scale = style.intensity_scale * rng.uniform(0.85, 1.15)
    sigma = style.noise * rng.uniform(0.8, 1.2) * scale
    real = signal * scale + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.clip(np.rint(np.hypot(real, imaginary)), 0, style.max_value).astype(np.int16)
