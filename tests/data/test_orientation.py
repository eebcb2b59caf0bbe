"""Canonical orientation: any axis order and flip reads as the same volume; results map back exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.io import Geometry, read_volume, write_volume
from prokd.data.orientation import Orientation, read_canonical

SHAPE = (4, 5, 6)


def oblique_scan() -> sitk.Image:
    """A ``(4, 5, 6)`` scan rotated by 0.3 rad about the scanner axis: not axis-aligned, closest to canonical."""
    image = sitk.GetImageFromArray(np.arange(math.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    image.SetSpacing((0.5, 0.7, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    c, s = math.cos(0.3), math.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return image


def itk_geometry(image: sitk.Image) -> Geometry:
    return Geometry(spacing=image.GetSpacing()[::-1], origin=image.GetOrigin(), direction=image.GetDirection())


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_every_axis_order_and_flip_reads_as_the_same_volume(tmp_path, suffix):
    scan = oblique_scan()
    for order, flips in itertools.product(itertools.permutations(range(3)), itertools.product([False, True], repeat=3)):
        path = tmp_path / f"{''.join(map(str, order))}-{''.join(str(int(f)) for f in flips)}{suffix}"
        sitk.WriteImage(sitk.Flip(sitk.PermuteAxes(scan, order), flips), str(path))
        volume = read_canonical(path)
        np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(scan), err_msg=path.name)
        assert volume.geometry.same_grid(itk_geometry(scan), tol=1e-5), path.name
        assert volume.orientation.is_identity == (order == (0, 1, 2) and not any(flips))


def test_results_map_back_to_the_stored_array(tmp_path):
    stored_scan = sitk.Flip(sitk.PermuteAxes(oblique_scan(), (1, 2, 0)), (False, True, True))
    sitk.WriteImage(stored_scan, str(tmp_path / "v.mha"))
    stored, geometry = read_volume(tmp_path / "v.mha")
    volume = read_canonical(tmp_path / "v.mha")
    assert volume.stored_geometry == geometry
    assert volume.array.shape == SHAPE and stored.shape == volume.orientation.stored_shape == (6, 4, 5)
    np.testing.assert_array_equal(volume.to_stored(volume.array), stored)
    mask = (volume.array > 60).astype(np.uint8)
    np.testing.assert_array_equal(volume.to_stored(mask), (stored > 60).astype(np.uint8))
    with pytest.raises(ValueError, match=r"array has shape \(6, 4, 5\), but this orientation expects \(4, 5, 6\)"):
        volume.to_stored(stored)


def test_canonical_files_are_left_as_stored(tmp_path):
    canonical = Geometry(spacing=(3.0, 0.7, 0.5), origin=(1.0, 2.0, 3.0))
    array = np.arange(math.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    volume = read_canonical(write_volume(tmp_path / "v.nii.gz", array, canonical))
    assert volume.orientation.is_identity and volume.geometry == volume.stored_geometry
    assert volume.geometry.nifti is not None  # the header fields travel on, so results are written back unchanged
    np.testing.assert_array_equal(volume.array, array)


def test_numpy_volumes_are_taken_as_canonical(tmp_path):
    array = np.arange(math.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    np.save(tmp_path / "v.npy", array)
    volume = read_canonical(tmp_path / "v.npy")
    assert volume.orientation == Orientation(SHAPE, ((0, 1), (1, 1), (2, 1))) and volume.geometry == Geometry()
    np.testing.assert_array_equal(volume.array, array)


def test_a_channel_is_read_in_the_canonical_frame(tmp_path):
    scan = sitk.Flip(sitk.PermuteAxes(oblique_scan(), (2, 1, 0)), (True, False, False))
    sitk.WriteImage(sitk.JoinSeries([scan, scan * -1]), str(tmp_path / "t2_adc.mha"))
    adc = read_canonical(tmp_path / "t2_adc.mha", channel=1).array
    np.testing.assert_array_equal(adc, -sitk.GetArrayFromImage(oblique_scan()))
