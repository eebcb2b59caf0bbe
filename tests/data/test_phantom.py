from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from prokd.data.phantom import SITES, PhantomCase, make_case, write_phantom


def _case(site_index: int, seed: int) -> PhantomCase:
    return make_case(SITES[site_index], np.random.default_rng([seed, site_index]))


@pytest.fixture(scope="module")
def cases() -> dict[str, list[PhantomCase]]:
    """Three cases per site, shared by the read-only tests."""
    return {style.name: [_case(index, seed) for seed in range(3)] for index, style in enumerate(SITES)}


def best_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    """Highest Dice of ``image >= t`` or ``image <= t`` with ``label``, over every threshold ``t`` (exact)."""
    order = np.argsort(image, axis=None, kind="stable")
    values, foreground = image.ravel()[order], label.ravel()[order].astype(bool)
    below = np.concatenate([[0], np.cumsum(foreground)])  # foreground voxels among the k smallest values
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values)) + 1])  # where each distinct value begins
    total, size = int(foreground.sum()), values.size
    dice_above = 2 * (total - below[starts]) / (size - starts + total)
    dice_below = 2 * below[starts[1:]] / (starts[1:] + total)
    return float(max(dice_above.max(), dice_below.max(initial=0.0)))


def test_best_threshold_dice_helper():
    image = np.array([[[1, 5, 3, 7]]])
    assert best_threshold_dice(image, image >= 5) == 1.0
    assert best_threshold_dice(image, image <= 3) == 1.0
    # label {5, 1}: best is image <= 5 -> 3 voxels, 2 hits -> 4 / 5; or image >= 5 -> 2 voxels, 1 hit -> 2 / 4
    assert best_threshold_dice(image, np.array([[[1, 1, 0, 0]]])) == pytest.approx(0.8)


def test_same_seed_same_case_and_different_seed_different_case():
    first, again, other = _case(2, 7), _case(2, 7), _case(2, 8)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.label.tobytes() == again.label.tobytes()
    assert first.spacing == again.spacing
    assert not np.array_equal(first.image, other.image)
    assert not np.array_equal(first.label, other.label)


def test_sites_are_distinct_and_named():
    names = [style.name for style in SITES]
    assert len(SITES) >= 4 and len(set(names)) == len(names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SITES[0].matrix = 64  # type: ignore[misc]


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"intensity_scale": 0.0}, "must be positive"),
        ({"noise": -0.1}, "must be >= 0"),
        ({"max_value": 40000}, "int16"),
        ({"spacing_range": (0.8, 0.5)}, "spacing_range"),
        ({"matrix": 16}, "matrix"),
        ({"slices_range": (10, 8)}, "slices_range"),
        ({"slices_range": (8, 10), "slice_thickness": 5.0}, "at least 45 mm"),
    ],
)
def test_site_style_rejects_bad_values(change, problem):
    with pytest.raises(ValueError, match=f"site style 'SiteA': .*{problem}"):
        dataclasses.replace(SITES[0], **change)


def test_site_field_of_view():
    assert SITES[0].field_of_view_mm == pytest.approx((160 * 0.52, 160 * 0.56))


def test_geometry_follows_the_site(cases):
    for style in SITES:
        for case in cases[style.name]:
            slices, rows, cols = case.image.shape
            assert (rows, cols) == (style.matrix, style.matrix)
            assert style.slices_range[0] <= slices <= style.slices_range[1]
            assert case.spacing[0] == style.slice_thickness
            assert case.spacing[1] == case.spacing[2]
            assert style.spacing_range[0] <= case.spacing[1] <= style.spacing_range[1]
            low, high = style.field_of_view_mm
            assert low <= cols * case.spacing[2] <= high
            assert case.image.dtype == np.int16 and case.label.dtype == np.uint8
            assert case.site == style.name
            assert 0 <= case.image.min() and case.image.max() <= style.max_value


def test_sites_differ_in_field_of_view_gland_size_and_intensity(cases):
    fov = {name: np.mean([c.image.shape[1] * c.spacing[1] for c in group]) for name, group in cases.items()}
    assert max(fov.values()) / min(fov.values()) > 1.6
    assert len({round(v / 10) for v in fov.values()}) == len(SITES)  # all fields of view at least ~10 mm apart
    # apparent gland width as a fraction of the image: largest gland cross-section, in pixels, over the matrix
    width = {
        name: np.mean([np.sqrt(c.label.sum(axis=(1, 2)).max()) / c.image.shape[1] for c in group])
        for name, group in cases.items()
    }
    assert max(width.values()) / min(width.values()) > 1.5
    top = {name: np.mean([np.percentile(c.image, 99.5) for c in group]) for name, group in cases.items()}
    ordered = sorted(top.values())
    assert ordered[-1] / ordered[0] > 20
    assert all(high / low > 1.5 for low, high in zip(ordered, ordered[1:]))
    spacings = {name: np.mean([c.spacing[1] for c in group]) for name, group in cases.items()}
    assert min(spacings.values()) < 0.6 and max(spacings.values()) > 0.75


def test_label_is_one_gland_on_middle_slices(cases):
    for group in cases.values():
        for case in group:
            assert set(np.unique(case.label)) == {0, 1}
            occupied = np.flatnonzero(case.label.any(axis=(1, 2)))
            assert np.array_equal(occupied, np.arange(occupied[0], occupied[-1] + 1))
            assert occupied[0] >= 1 and occupied[-1] <= case.label.shape[0] - 2
            assert len(occupied) * case.spacing[0] >= 24.0  # apex to base at least ~2.5 cm
            assert ndimage.label(case.label)[1] == 1
            volume_ml = case.label.sum() * np.prod(case.spacing) / 1000.0
            assert 12.0 < volume_ml < 70.0


def test_gland_is_not_an_intensity_threshold(cases):
    for group in cases.values():
        for case in group:
            assert best_threshold_dice(case.image, case.label) < 0.6
            # even in the gland's bounding box grown by 10 mm in-plane, no threshold isolates it
            box = ndimage.find_objects(case.label)[0]
            margin = int(np.ceil(10.0 / case.spacing[1]))
            near = (box[0],) + tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box[1:])
            assert best_threshold_dice(case.image[near], case.label[near]) < 0.7


def _load_zyx(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = nib.load(path)
    zooms = image.header.get_zooms()
    return np.asarray(image.dataobj).transpose(2, 1, 0), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def test_write_phantom_datalist_and_files(tmp_path):
    datalist_path = write_phantom(tmp_path / "phantom", cases_per_site=1, unlabeled_per_site=1, seed=3)
    assert datalist_path == tmp_path / "phantom" / "dataset.json"
    datalist = json.loads(datalist_path.read_text())
    assert [entry["case"] for entry in datalist["training"]] == [f"{style.name}_000" for style in SITES]
    assert [entry["case"] for entry in datalist["unlabeled"]] == [f"{style.name}_U000" for style in SITES]
    styles = {style.name: style for style in SITES}
    for entry in datalist["training"]:
        assert entry["image"] == f"imagesTr/{entry['case']}.nii.gz"
        assert entry["label"] == f"labelsTr/{entry['case']}.nii.gz"
        image, spacing = _load_zyx(datalist_path.parent / entry["image"])
        label, label_spacing = _load_zyx(datalist_path.parent / entry["label"])
        style = styles[entry["site"]]
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert image.shape == label.shape and image.shape[1:] == (style.matrix, style.matrix)
        assert spacing == label_spacing and spacing[0] == pytest.approx(style.slice_thickness)
        assert style.spacing_range[0] <= spacing[1] == spacing[2] <= style.spacing_range[1] + 1e-6
        lps_axes = np.diag(spacing[::-1]) * [-1, -1, 1]  # x left, y posterior, z superior: the canonical frame
        assert np.array_equal(nib.load(datalist_path.parent / entry["image"]).affine[:3, :3], lps_axes)
        assert set(np.unique(label)) == {0, 1}
    for entry in datalist["unlabeled"]:
        assert set(entry) == {"case", "site", "image"} and entry["image"].startswith("imagesUn/")
        assert (datalist_path.parent / entry["image"]).is_file()


def test_write_phantom_cases_do_not_depend_on_dataset_size(tmp_path):
    site = (SITES[2],)
    small = write_phantom(tmp_path / "small", cases_per_site=1, unlabeled_per_site=0, seed=1, sites=site)
    large = write_phantom(tmp_path / "large", cases_per_site=2, unlabeled_per_site=0, seed=1, sites=site)
    first_small, _ = _load_zyx(small.parent / "imagesTr" / "SiteC_000.nii.gz")
    first_large, _ = _load_zyx(large.parent / "imagesTr" / "SiteC_000.nii.gz")
    second_large, _ = _load_zyx(large.parent / "imagesTr" / "SiteC_001.nii.gz")
    assert np.array_equal(first_small, first_large)
    assert first_large.shape != second_large.shape or not np.array_equal(first_large, second_large)


def test_write_phantom_reuses_identical_and_refuses_other_folders(tmp_path):
    site = (SITES[2],)
    out = tmp_path / "phantom"
    datalist_path = write_phantom(out, cases_per_site=1, unlabeled_per_site=0, seed=0, sites=site)
    written = datalist_path.stat().st_mtime_ns
    assert write_phantom(out, cases_per_site=1, unlabeled_per_site=0, seed=0, sites=site) == datalist_path
    assert datalist_path.stat().st_mtime_ns == written
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_phantom(out, cases_per_site=1, unlabeled_per_site=0, seed=1, sites=site)
    altered = (dataclasses.replace(SITES[2], noise=0.2),)
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        write_phantom(out, cases_per_site=1, unlabeled_per_site=0, seed=0, sites=altered)
    (out / "labelsTr" / "SiteC_000.nii.gz").unlink()
    with pytest.raises(FileExistsError):
        write_phantom(out, cases_per_site=1, unlabeled_per_site=0, seed=0, sites=site)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_phantom(foreign, cases_per_site=1, unlabeled_per_site=0, sites=site)
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_phantom(foreign / "notes.txt", cases_per_site=1, unlabeled_per_site=0, sites=site)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "kwargs",
    [{"cases_per_site": 0}, {"unlabeled_per_site": -1}, {"seed": -1}, {"sites": []}, {"sites": [SITES[0], SITES[0]]}],
)
def test_write_phantom_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "phantom"))):
        write_phantom(tmp_path / "phantom", **kwargs)
    assert not (tmp_path / "phantom").exists()
