"""Field-of-view shifts: shapes, spacing, and the exact way back to the original grid."""

from __future__ import annotations

import numpy as np
import pytest

from prokd.eval.field_of_view import FIELD_OF_VIEW_CURVE, FieldOfView


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    """An odd-sized image ``(5, 41, 50)`` with a central blob as its label."""
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 400, (5, 41, 50)).astype(np.float32)
    zz, yy, xx = np.mgrid[:5, :41, :50]
    label = ((yy - 20) ** 2 / 100 + (xx - 25) ** 2 / 144 < 1).astype(np.uint8)
    return image, label


def test_every_shift_comes_back_to_the_original_grid(case):
    image, label = case
    for shift in FIELD_OF_VIEW_CURVE:
        moved = shift.apply(label, label=True)
        assert moved.shape == shift.shifted_shape(label.shape) and moved.dtype == label.dtype
        assert shift.restore(moved, label.shape).shape == label.shape
        assert shift.apply(image).shape == moved.shape


@pytest.mark.parametrize("shift", [FieldOfView("original"), FieldOfView("pad", 1.5), FieldOfView("pad", 2.0),
                                   FieldOfView("resample", 2.0)])
def test_shifts_that_lose_nothing_round_trip_exactly(case, shift):
    image, label = case
    np.testing.assert_array_equal(shift.restore(shift.apply(label, label=True), label.shape), label)
    if shift.kind == "pad":
        np.testing.assert_array_equal(shift.restore(shift.apply(image), image.shape), image)


def test_a_crop_keeps_the_centre_exactly_and_loses_the_rim(case):
    _, label = case
    crop = FieldOfView("crop", 0.6)
    moved = crop.apply(label, label=True)
    assert moved.shape == (5, 25, 30)
    back = crop.restore(moved, label.shape)
    inside = np.zeros(label.shape, bool)
    inside[:, 8:33, 10:40] = True
    np.testing.assert_array_equal(back[inside], label[inside])
    assert not back[~inside].any()


def test_padding_is_empty_space(case):
    image, label = case
    padded = FieldOfView("pad", 2.0).apply(image)
    assert padded.shape == (5, 82, 100)
    assert padded[:, 0, :].max() == image.min() and padded.sum() > image.sum()
    assert FieldOfView("pad", 2.0).apply(label, label=True)[:, :, :20].max() == 0


def test_a_coarser_grid_keeps_the_field_of_view_and_the_anatomy(case):
    _, label = case
    coarse = FieldOfView("resample", 0.5)
    moved = coarse.apply(label, label=True)
    assert moved.shape == (5, 20, 25)
    assert 4 * int(moved.sum()) == pytest.approx(int(label.sum()), rel=0.1)  # each pixel covers 4
    back = coarse.restore(moved, label.shape)
    assert (back == label).mean() > 0.97  # only the boundary moves


def test_spacing_follows_the_resolution_only():
    assert FieldOfView("resample", 2.0).spacing((3.0, 0.6, 0.6)) == (3.0, 0.3, 0.3)
    assert FieldOfView("pad", 2.0).spacing((3.0, 0.6, 0.6)) == (3.0, 0.6, 0.6)
    assert FieldOfView("resample", 0.5).spacing(None) is None


def test_impossible_shifts_are_refused():
    with pytest.raises(ValueError, match="must be one of"):
        FieldOfView("rotate", 1.0)
    with pytest.raises(ValueError, match="crop 1.5x: a crop takes a factor in"):
        FieldOfView("crop", 1.5)
    with pytest.raises(ValueError, match="pad 0.5x"):
        FieldOfView("pad", 0.5)
