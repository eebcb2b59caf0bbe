from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from prokd.data.io import SUPPORTED_SUFFIXES, Geometry, VolumeError, read_volume, volume_suffix, write_volume

ROTATION_Z = (math.cos(0.3), -math.sin(0.3), 0.0, math.sin(0.3), math.cos(0.3), 0.0, 0.0, 0.0, 1.0)
OBLIQUE = Geometry(spacing=(3.3, 0.65, 0.55), origin=(-12.345678901, 33.3666666, -7.75), direction=ROTATION_Z)


def ramp(shape: tuple[int, int, int] = (4, 5, 6), dtype: type = np.int16) -> np.ndarray:
    """Distinct values, so any axis mix-up shows."""
    return (np.arange(np.prod(shape)) - 40).reshape(shape).astype(dtype)


def rotated_ras_affine() -> np.ndarray:
    """Rotation of 0.4 rad about the first world axis, zooms (0.5, 0.7, 3.0), translation (10, -20, 30)."""
    c, s = math.cos(0.4), math.sin(0.4)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([0.5, 0.7, 3.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("a.nii", ".nii"), ("a.NII.GZ", ".nii.gz"), ("b.mha", ".mha"), ("c.mhd", ".mhd"), ("x.y.nrrd", ".nrrd"),
     ("d.npy", ".npy"), ("case00_image.npy.gz", ".npy.gz")],
)
def test_volume_suffix_keeps_double_suffixes(name, suffix):
    assert volume_suffix(Path("/data") / name) == suffix


@pytest.mark.parametrize("name", ["scan.png", "scan.gz", "scan.nii.bak", "scan"])
def test_volume_suffix_rejects_unsupported_files(name):
    with pytest.raises(VolumeError, match=rf"^{name}: unsupported file type \(supported: \.nii, "):
        volume_suffix(name)


def test_nifti_axes_spacing_and_orientation(tmp_path):
    data_ijk = ramp((6, 5, 4))
    affine = rotated_ras_affine()
    path = tmp_path / "rot.nii.gz"
    nib.save(nib.Nifti1Image(data_ijk, affine), path)

    array, geometry = read_volume(path)

    assert array.shape == (4, 5, 6) and array.dtype == np.int16
    assert array[3, 1, 2] == data_ijk[2, 1, 3]
    np.testing.assert_array_equal(array, data_ijk.transpose(2, 1, 0))
    assert geometry.spacing == pytest.approx((3.0, 0.7, 0.5))
    assert geometry.origin == pytest.approx((-10.0, 20.0, 30.0))  # RAS (10, -20, 30) in LPS
    c, s = math.cos(0.4), math.sin(0.4)
    assert geometry.direction == pytest.approx((-1, 0, 0, 0, -c, s, 0, s, c), abs=1e-6)


def test_nifti_geometry_agrees_with_simpleitk(tmp_path):
    path = tmp_path / "rot.nii"
    nib.save(nib.Nifti1Image(ramp((6, 5, 4)), rotated_ras_affine()), path)
    array, geometry = read_volume(path)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(itk))
    assert geometry.same_grid(Geometry(itk.GetSpacing()[::-1], itk.GetOrigin(), itk.GetDirection()), tol=1e-5)


def test_itk_axes_spacing_and_orientation(tmp_path):
    source = sitk.GetImageFromArray(ramp())
    source.SetSpacing((0.55, 0.65, 3.3))
    source.SetOrigin(OBLIQUE.origin)
    source.SetDirection(ROTATION_Z)
    sitk.WriteImage(source, str(tmp_path / "a.mha"))

    array, geometry = read_volume(tmp_path / "a.mha")

    np.testing.assert_array_equal(array, ramp())
    assert geometry == OBLIQUE


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_is_exact(tmp_path, suffix, dtype):
    first = write_volume(tmp_path / f"first{suffix}", ramp(dtype=dtype), OBLIQUE)
    array, geometry = read_volume(first)
    again, regeometry = read_volume(write_volume(tmp_path / f"again{suffix}", array, geometry))

    assert again.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(again, ramp(dtype=dtype))
    if suffix == ".nrrd":
        # NRRD stores spacing x direction as one matrix; splitting it again can move the last bit.
        assert regeometry.same_grid(geometry, tol=1e-12)
    else:
        assert regeometry == geometry


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"])
def test_geometry_survives_every_format(tmp_path, suffix):
    _, geometry = read_volume(write_volume(tmp_path / f"v{suffix}", ramp(), OBLIQUE))
    assert geometry.same_grid(OBLIQUE, tol=1e-5)  # NIfTI stores float32


def test_nifti_header_transforms_are_written_back_unchanged(tmp_path):
    image = nib.Nifti1Image(ramp((6, 5, 4)), affine=None)
    image.header.set_sform(rotated_ras_affine(), code=2)
    image.header.set_qform(None, code=0)
    nib.save(image, tmp_path / "aligned.nii.gz")

    array, geometry = read_volume(tmp_path / "aligned.nii.gz")
    write_volume(tmp_path / "copy.nii.gz", array, geometry)
    header = nib.load(tmp_path / "copy.nii.gz").header

    assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 0)
    np.testing.assert_array_equal(header.get_sform(), image.header.get_sform())
    assert read_volume(tmp_path / "copy.nii.gz")[1] == geometry


def test_changed_geometry_is_not_overridden_by_stale_nifti_fields(tmp_path):
    array, geometry = read_volume(write_volume(tmp_path / "a.nii", ramp(), OBLIQUE))
    moved = dataclasses.replace(geometry, spacing=(2.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0))
    _, written = read_volume(write_volume(tmp_path / "b.nii", array, moved))
    assert written.same_grid(moved, tol=1e-6)


def test_numpy_files_have_unknown_spacing_and_plain_format(tmp_path):
    path = write_volume(tmp_path / "v.npy.gz", ramp(), OBLIQUE)
    with gzip.open(path) as stream:
        np.testing.assert_array_equal(np.load(stream), ramp())
    array, geometry = read_volume(path)
    assert geometry == Geometry() and geometry.spacing is None


def test_unknown_spacing_is_written_as_one_mm(tmp_path):
    _, geometry = read_volume(write_volume(tmp_path / "v.mha", ramp(), Geometry()))
    assert geometry == Geometry(spacing=(1.0, 1.0, 1.0))


def test_boolean_masks_are_written_as_uint8(tmp_path):
    mask = ramp() > 0
    for suffix in (".nii.gz", ".nrrd", ".npy"):
        array, _ = read_volume(write_volume(tmp_path / f"m{suffix}", mask, OBLIQUE))
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, mask)


def test_single_channel_4d_volumes_are_squeezed(tmp_path):
    np.save(tmp_path / "c.npy", ramp()[None])
    nib.save(nib.Nifti1Image(ramp((6, 5, 4))[..., None], np.eye(4)), tmp_path / "c.nii.gz")
    assert read_volume(tmp_path / "c.npy")[0].shape == (4, 5, 6)
    np.testing.assert_array_equal(read_volume(tmp_path / "c.nii.gz")[0], ramp((6, 5, 4)).transpose(2, 1, 0))


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_volume(tmp_path / "v.nii.gz", ramp(), OBLIQUE)
    with pytest.raises(FileExistsError, match=r"v\.nii\.gz: already exists"):
        write_volume(path, ramp() * 0, OBLIQUE)
    np.testing.assert_array_equal(read_volume(path)[0], ramp())

    write_volume(path, ramp() * 0, OBLIQUE, overwrite=True)
    assert not read_volume(path)[0].any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]  # no temporary files left


def test_metaimage_header_and_data_file_are_written_together(tmp_path):
    write_volume(tmp_path / "out" / "v.mhd", ramp(), OBLIQUE)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v.mhd", "v.zraw"]
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "v.mhd")[0], ramp())


def test_geometry_dict_is_plain_json(tmp_path):
    _, nifti_geometry = read_volume(write_volume(tmp_path / "a.nii", ramp(), OBLIQUE))
    for geometry in (nifti_geometry, OBLIQUE, Geometry()):
        assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


def test_same_grid_tolerance():
    shifted = dataclasses.replace(OBLIQUE, origin=(OBLIQUE.origin[0] + 5e-5, *OBLIQUE.origin[1:]))
    assert OBLIQUE.same_grid(shifted)
    assert not OBLIQUE.same_grid(shifted, tol=1e-5)
    assert not OBLIQUE.same_grid(dataclasses.replace(OBLIQUE, spacing=(3.3, 0.65, 0.56)))
    assert not OBLIQUE.same_grid(dataclasses.replace(OBLIQUE, spacing=None))
    assert Geometry().same_grid(Geometry())


def test_two_dimensional_arrays_are_refused(tmp_path):
    np.save(tmp_path / "slice.npy", np.zeros((5, 6)))
    with pytest.raises(VolumeError, match=r"slice\.npy: is a 2D image of shape \(5, 6\); expected a 3D volume"):
        read_volume(tmp_path / "slice.npy")
    with pytest.raises(VolumeError, match=r"slice\.nii: cannot write an array of shape \(5, 6\)"):
        write_volume(tmp_path / "slice.nii", np.zeros((5, 6)), Geometry())


def two_channel_files(folder: Path) -> list[Path]:
    """T2 = ``ramp()`` and ADC = ``-ramp()`` as a NIfTI ``(i, j, k, 2)``, an ITK 4D image, an ITK vector image and
    a numpy ``(2, Z, Y, X)`` array; each on the geometry ``OBLIQUE`` except numpy."""
    zyx = np.stack([ramp(), -ramp()])
    nib.save(nib.Nifti1Image(zyx.transpose(3, 2, 1, 0), OBLIQUE.ras_affine()), folder / "mc.nii.gz")
    volume = sitk.GetImageFromArray(ramp())
    volume.SetSpacing(OBLIQUE.itk_spacing())
    volume.SetOrigin(OBLIQUE.origin)
    volume.SetDirection(OBLIQUE.direction)
    series = sitk.JoinSeries([sitk.Image(volume), sitk.Image(volume) * -1])
    vector = sitk.Compose(volume, volume * -1)
    sitk.WriteImage(series, str(folder / "mc4d.mha"))
    sitk.WriteImage(vector, str(folder / "mcvector.nrrd"))
    np.save(folder / "mc.npy", zyx)
    return [folder / name for name in ("mc.nii.gz", "mc4d.mha", "mcvector.nrrd", "mc.npy")]


def test_a_channel_is_picked_from_multichannel_volumes(tmp_path):
    for path in two_channel_files(tmp_path):
        t2, geometry = read_volume(path, channel=0)
        adc, _ = read_volume(path, channel=1)
        np.testing.assert_array_equal(t2, ramp())
        np.testing.assert_array_equal(adc, -ramp())
        if path.suffix != ".npy":
            assert geometry.same_grid(OBLIQUE, tol=1e-5), path


def test_multichannel_volumes_need_a_channel(tmp_path):
    for path in two_channel_files(tmp_path):
        expected = (
            rf"{path.name}: has 2 channels \(shape \(channels, slices, rows, cols\) = \(2, 4, 5, 6\)\); "
            r"choose one with --channel N"
        )
        with pytest.raises(VolumeError, match=expected):
            read_volume(path)
        with pytest.raises(VolumeError, match=rf"{path.name}: has 2 channel\(s\) .*; channel 2 does not exist"):
            read_volume(path, channel=2)


def test_a_3d_volume_is_its_own_channel_0(tmp_path):
    path = write_volume(tmp_path / "v.nii.gz", ramp(), OBLIQUE)
    np.testing.assert_array_equal(read_volume(path, channel=0)[0], ramp())
    one = r"v\.nii\.gz: has 1 channel\(s\) \(shape \(4, 5, 6\)\); channel 1 does not exist"
    with pytest.raises(VolumeError, match=one):
        read_volume(path, channel=1)


def test_missing_corrupt_and_unsupported_files_are_named(tmp_path):
    write_volume(tmp_path / "good.nii", ramp(), OBLIQUE)
    (tmp_path / "truncated.nii").write_bytes((tmp_path / "good.nii").read_bytes()[:-30])
    for name in ("garbage.nii.gz", "garbage.mha", "garbage.nrrd", "garbage.npy", "garbage.npy.gz"):
        (tmp_path / name).write_bytes(b"not a volume " * 40)
    cases = {
        "missing.mha": "file not found",
        "truncated.nii": "cannot read .nii file",
        "garbage.nii.gz": "cannot read .nii.gz file",
        "garbage.mha": "cannot read .mha file",
        "garbage.nrrd": "cannot read .nrrd file",
        "garbage.npy": "cannot read .npy file",
        "garbage.npy.gz": "cannot read .npy.gz file",
        "notes.txt": "unsupported file type",
    }
    for name, problem in cases.items():
        with pytest.raises(VolumeError) as caught:
            read_volume(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: {problem}") and "\n" not in message


def test_unwritable_dtype_is_a_volume_error(tmp_path):
    with pytest.raises(VolumeError, match=r"half\.nii: cannot write a float16 array as \.nii"):
        write_volume(tmp_path / "half.nii", ramp(dtype=np.float16), OBLIQUE)
    assert list(tmp_path.iterdir()) == []
