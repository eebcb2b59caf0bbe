from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prokd.config import PreprocessConfig
from prokd.data.preprocess import GridPlan, Preprocessor, normalize_intensity

torch.set_num_threads(1)


def _disk(shape_zyx: tuple[int, int, int], spacing_yx: tuple[float, float], radius_mm: float) -> np.ndarray:
    """Binary disk of ``radius_mm`` centred in every slice, in physical coordinates."""
    z, rows, cols = shape_zyx
    y = (np.arange(rows) - (rows - 1) / 2) * spacing_yx[0]
    x = (np.arange(cols) - (cols - 1) / 2) * spacing_yx[1]
    disk = (y[:, None] ** 2 + x[None, :] ** 2) < radius_mm**2
    return np.repeat(disk[None], z, axis=0).astype(np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _preprocessor(**kwargs) -> Preprocessor:
    return Preprocessor(PreprocessConfig(**kwargs))


# --- normalisation ---------------------------------------------------------------------------------------


def test_normalize_gives_zero_mean_unit_sd_and_clips_outliers():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 50.0, size=(4, 32, 32)) + 1.0
    image[0, 0, 0] = 1e6
    out = normalize_intensity(image, (1.0, 99.0))
    assert out.dtype == np.float32 and out.shape == image.shape
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1.0) < 1e-5
    low, high = np.percentile(image, (1.0, 99.0))
    assert out.max() == pytest.approx(out[image >= high].min()) and out.max() < 5.0
    assert np.all(out[(image > low) & (image < high)] < out.max())


def test_normalize_is_invariant_to_intensity_scale():
    image = np.random.default_rng(1).uniform(1.0, 500.0, size=(3, 20, 24))
    np.testing.assert_allclose(normalize_intensity(image), normalize_intensity(100.0 * image), atol=1e-5)


def test_normalize_ignores_zero_background_for_its_statistics():
    tissue = np.random.default_rng(2).uniform(10.0, 90.0, size=(3, 16, 16))
    padded = np.zeros((3, 40, 40))
    padded[:, 12:28, 12:28] = tissue
    out = normalize_intensity(padded)
    np.testing.assert_allclose(out[:, 12:28, 12:28], normalize_intensity(tissue), atol=1e-6)
    assert out[0, 0, 0] == out.min()


def test_normalize_constant_volume_is_zero_and_bad_input_raises():
    assert np.all(normalize_intensity(np.full((2, 8, 8), 7.0)) == 0.0)
    assert np.all(normalize_intensity(np.zeros((2, 8, 8))) == 0.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        normalize_intensity(np.full((2, 8, 8), np.nan))
    with pytest.raises(ValueError, match=r"shape \(Z, Y, X\)"):
        normalize_intensity(np.ones((8, 8)))


# --- grid plans ----------------------------------------------------------------------------------------


def test_plan_target_spacing_pads_non_square_slices():
    plan = _preprocessor(size=128, target_spacing=1.0).plan((20, 160, 192), (3.0, 0.5, 0.5))
    assert plan == GridPlan((20, 160, 192), (0, 160, 0, 192), (80, 96), (24, 16), 128)


def test_plan_target_spacing_crops_large_fields_of_view():
    plan = _preprocessor(size=160, target_spacing=0.8).plan((4, 300, 256), (3.0, 0.6, 0.5))
    # 300 * 0.6 / 0.8 = 225 rows, 256 * 0.5 / 0.8 = 160 cols.
    assert plan.resampled_shape == (225, 160) and plan.offset == (-33, 0)


def test_plan_without_spacing_crops_the_field_of_view_then_resizes():
    preprocessor = _preprocessor(size=64, target_spacing=0.7, crop_fraction=0.8)
    plan = preprocessor.plan((4, 160, 192), None)
    # 160 * 0.8 = 128 rows, 192 * 0.8 = 153.6 -> 154 cols, centred.
    assert plan == GridPlan((4, 160, 192), (16, 144, 19, 173), (64, 64), (0, 0), 64)
    assert _preprocessor(size=64).plan((4, 160, 192), (3.0, 0.5, 0.5)).crop_box == (0, 160, 0, 192)


def test_plan_rejects_bad_shape_and_spacing():
    preprocessor = _preprocessor(size=64, target_spacing=1.0)
    with pytest.raises(ValueError, match="volume shape"):
        preprocessor.plan((64, 64), None)
    with pytest.raises(ValueError, match="spacing must be three positive"):
        preprocessor.plan((3, 64, 64), (3.0, 0.0, 0.5))


@pytest.mark.parametrize(
    ("config", "shape", "spacing"),
    [
        ({"size": 64, "target_spacing": 1.0}, (5, 160, 192), (3.0, 0.5, 0.45)),
        ({"size": 64, "target_spacing": 0.4}, (5, 160, 192), (3.0, 0.5, 0.45)),
        ({"size": 64, "crop_fraction": 0.7}, (5, 160, 192), None),
        ({"size": 64}, (5, 50, 30), None),
    ],
)
def test_every_branch_maps_to_the_grid_and_back_to_the_exact_shape(config, shape, spacing):
    preprocessor = _preprocessor(**config)
    plan = preprocessor.plan(shape, spacing)
    image = np.random.default_rng(0).uniform(0.0, 100.0, size=shape)
    grid = preprocessor.image_to_grid(image, plan)
    label = preprocessor.label_to_grid(image > 50.0, plan)
    assert grid.shape == label.shape == (5, 64, 64)
    assert grid.dtype == np.float32 and label.dtype == np.uint8
    volume = preprocessor.grid_to_volume(np.full((5, 64, 64), 0.75, dtype=np.float32), plan)
    assert volume.shape == shape and volume.dtype == np.float32
    assert volume.min() >= 0.0 and volume.max() <= 0.75 + 1e-6


@pytest.mark.parametrize("spacing", [None, (2.5, 0.8, 0.8)])
def test_identity_plan_round_trips_exactly(spacing):
    preprocessor = _preprocessor(size=64, target_spacing=0.8)
    plan = preprocessor.plan((3, 64, 64), spacing)
    rng = np.random.default_rng(3)
    image = rng.normal(size=(3, 64, 64))
    label = (rng.uniform(size=(3, 64, 64)) > 0.5).astype(np.uint8)
    prob = rng.uniform(size=(3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(preprocessor.image_to_grid(image, plan), normalize_intensity(image))
    np.testing.assert_array_equal(preprocessor.label_to_grid(label, plan), label)
    np.testing.assert_array_equal(preprocessor.grid_to_volume(prob, plan), prob)


def test_inverse_gives_zero_probability_where_the_grid_cropped():
    preprocessor = _preprocessor(size=160, target_spacing=1.0)
    plan = preprocessor.plan((2, 200, 180), (3.0, 1.0, 1.0))
    volume = preprocessor.grid_to_volume(np.ones((2, 160, 160), dtype=np.float32), plan)
    expected = np.zeros((2, 200, 180), dtype=np.float32)
    expected[:, 20:180, 10:170] = 1.0
    np.testing.assert_array_equal(volume, expected)


def test_inverse_gives_zero_probability_outside_the_crop_box():
    preprocessor = _preprocessor(size=32, crop_fraction=0.5)
    plan = preprocessor.plan((2, 100, 80), None)
    volume = preprocessor.grid_to_volume(np.ones((2, 32, 32), dtype=np.float32), plan)
    inside = np.zeros(volume.shape, dtype=bool)
    inside[:, 25:75, 20:60] = True
    np.testing.assert_allclose(volume[inside], 1.0, atol=1e-6)
    assert np.all(volume[~inside] == 0.0)


@pytest.mark.parametrize(
    ("config", "shape", "spacing"),
    [
        ({"size": 96, "target_spacing": 0.8}, (4, 160, 192), (3.0, 0.5, 0.5)),
        ({"size": 96, "target_spacing": 0.6}, (4, 160, 192), (3.0, 0.5, 0.5)),
        ({"size": 64, "crop_fraction": 0.9}, (4, 160, 192), None),
    ],
)
def test_large_disk_survives_the_round_trip(config, shape, spacing):
    preprocessor = _preprocessor(**config)
    plan = preprocessor.plan(shape, spacing)
    label = _disk(shape, (0.5, 0.5), radius_mm=25.0)
    grid_label = preprocessor.label_to_grid(label, plan)
    back = preprocessor.grid_to_volume(grid_label.astype(np.float32), plan) >= 0.5
    assert _dice(back, label) > 0.98


def test_smooth_image_survives_the_round_trip():
    preprocessor = _preprocessor(size=128, target_spacing=0.8)
    plan = preprocessor.plan((3, 160, 192), (3.0, 0.5, 0.5))
    assert plan.resampled_shape == (100, 120)
    rows, cols = np.meshgrid(np.linspace(0, np.pi, 160), np.linspace(0, 2 * np.pi, 192), indexing="ij")
    image = np.repeat((np.sin(rows) * np.cos(cols) + 2.0)[None], 3, axis=0)
    back = preprocessor.grid_to_volume(preprocessor.image_to_grid(image, plan), plan)
    normalized = normalize_intensity(image)
    assert np.abs(back - normalized).max() < 0.01 * np.ptp(normalized)


def test_target_spacing_preserves_physical_size():
    preprocessor = _preprocessor(size=128, target_spacing=1.0)
    shape, spacing_yx = (3, 200, 192), (0.4, 0.5)
    plan = preprocessor.plan(shape, (3.0, *spacing_yx))
    grid_label = preprocessor.label_to_grid(_disk(shape, spacing_yx, radius_mm=20.0), plan)
    # 1 mm grid pixels: the disk's area is pi * 20^2 mm^2 and it spans 40 pixels in each direction.
    assert grid_label[0].sum() == pytest.approx(np.pi * 20.0**2, rel=0.02)
    assert grid_label[0].any(axis=1).sum() in (40, 41) and grid_label[0].any(axis=0).sum() in (40, 41)


def test_label_to_grid_treats_any_nonzero_value_as_foreground():
    preprocessor = _preprocessor(size=32)
    plan = preprocessor.plan((1, 32, 32), None)
    label = np.zeros((1, 32, 32), dtype=np.int16)
    label[0, 4:10, 4:10] = 2
    np.testing.assert_array_equal(preprocessor.label_to_grid(label, plan), (label > 0).astype(np.uint8))


def test_shape_mismatch_raises():
    preprocessor = _preprocessor(size=32)
    plan = preprocessor.plan((2, 40, 40), None)
    with pytest.raises(ValueError, match=r"image has shape \(2, 40, 41\), but the grid plan expects \(2, 40, 40\)"):
        preprocessor.image_to_grid(np.ones((2, 40, 41)), plan)
    with pytest.raises(ValueError, match="prob has shape"):
        preprocessor.grid_to_volume(np.ones((3, 32, 32)), plan)


def test_preprocessor_and_plan_round_trip_through_json():
    preprocessor = _preprocessor(size=96, target_spacing=0.7, clip_percentiles=(1.0, 99.0), context=1)
    restored = Preprocessor.from_dict(json.loads(json.dumps(preprocessor.to_dict())))
    assert restored.config == preprocessor.config
    plan = preprocessor.plan((7, 200, 170), (3.0, 0.6, 0.6))
    assert GridPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
