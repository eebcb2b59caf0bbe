"""Whole-volume prediction: geometry kept, format kept, never overwrites silently, post-processing."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from prokd.config import PostprocessConfig, PreprocessConfig
from prokd.data.io import Geometry, VolumeError, read_volume, write_volume
from prokd.infer.postprocess import largest_component, probability_to_mask
from prokd.infer.predict import Predictor, output_paths, predict_file


class BrightPixels(nn.Module):
    """A stand-in network whose logit is the centre channel's intensity: foreground where the input is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1] * 10.0


def bright_box_volume() -> np.ndarray:
    image = np.full((6, 40, 48), 10.0, dtype=np.float32)
    image[1:5, 10:30, 12:36] = 100.0
    return image


@pytest.mark.parametrize("context", [0, 1])
def test_predict_recovers_box_on_original_grid(context):
    image = bright_box_volume()
    predictor = Predictor(BrightPixels(), PreprocessConfig(size=32, context=context), PostprocessConfig(largest_component=False))
    prediction = predictor.predict(image, spacing=None)
    assert prediction.mask.shape == image.shape and prediction.probability.shape == image.shape
    truth = image > 50
    dice = 2 * (prediction.mask.astype(bool) & truth).sum() / (prediction.mask.sum() + truth.sum())
    assert dice > 0.95


def test_largest_component_keeps_biggest_blob():
    mask = np.zeros((5, 20, 20), dtype=np.uint8)
    mask[1:4, 2:10, 2:10] = 1
    mask[2, 15:17, 15:17] = 1
    kept = largest_component(mask)
    assert kept.sum() == 3 * 8 * 8 and kept[2, 15, 15] == 0
    assert largest_component(np.zeros_like(mask)).sum() == 0
    probability = mask * 0.9
    assert probability_to_mask(probability, PostprocessConfig(threshold=0.5)).sum() == 192
    assert probability_to_mask(probability, PostprocessConfig(largest_component=False)).sum() == 196


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd", ".npy.gz"])
def test_predict_file_keeps_format_and_geometry(tmp_path, suffix):
    source = tmp_path / f"case7_0000{suffix}"
    _, reference_geometry = read_volume(write_phantom_like(tmp_path / f"ref{suffix}"))
    write_volume(source, bright_box_volume().astype(np.int16), reference_geometry)
    predictor = Predictor(BrightPixels(), PreprocessConfig(size=32))
    mask_path = predict_file(predictor, source, tmp_path / "out", save_probability=True).mask
    assert mask_path.name == f"case7_mask{suffix}"
    mask, geometry = read_volume(mask_path)
    _, source_geometry = read_volume(source)
    assert geometry == source_geometry
    assert mask.shape == (6, 40, 48) and set(np.unique(mask)) == {0, 1}
    assert output_paths(source, tmp_path / "out")["prob"].is_file()
    with pytest.raises(FileExistsError, match="already exists"):
        predict_file(predictor, source, tmp_path / "out")
    predict_file(predictor, source, tmp_path / "out", overwrite=True)


def write_phantom_like(path):
    """A file with non-trivial geometry in ``path``'s format (numpy formats keep no geometry)."""
    geometry = Geometry(spacing=(3.0, 0.7, 0.6), origin=(10.0, -5.0, 2.5))
    return write_volume(path, np.zeros((6, 40, 48), dtype=np.int16), geometry)


class BrightUpperLeft(nn.Module):
    """Foreground where the centre channel is bright, in the upper-left quadrant of the grid only: a stand-in
    network whose output depends on how the volume is oriented."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        outside = torch.ones(size, size)
        outside[: size // 2, : size // 2] = 0.0
        return BrightPixels()(x) - 1000.0 * outside


def test_a_volume_stored_in_any_axis_order_gets_the_same_mask_in_space(phantom_data, reoriented, tmp_path):
    original = read_volume(phantom_data.parent / json.loads(phantom_data.read_text())["training"][0]["image"])
    source = write_volume(tmp_path / "scan.nii.gz", *original)
    preprocess = PreprocessConfig(size=64, target_spacing=2.5)
    predictor = Predictor(BrightUpperLeft(), preprocess, PostprocessConfig(largest_component=False))
    reference = sitk.ReadImage(str(predict_file(predictor, source, tmp_path / "out").mask))
    assert 0 < sitk.GetArrayViewFromImage(reference).mean() < 0.2
    for suffix in (".nii.gz", ".mha"):
        permuted = reoriented(source, tmp_path / f"permuted{suffix}")
        mask_path = predict_file(predictor, permuted, tmp_path / "out").mask
        mask, geometry = read_volume(mask_path)
        stored, stored_geometry = read_volume(permuted)
        assert mask.shape == stored.shape != original[0].shape and geometry == stored_geometry
        in_space = sitk.Resample(sitk.ReadImage(str(mask_path)), reference, sitk.Transform(), sitk.sitkNearestNeighbor)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(in_space), sitk.GetArrayFromImage(reference), err_msg=suffix
        )
        # the stored array, predicted as it lies, is another volume: the test would see a missing reorientation
        naive = predictor.predict(stored.astype(np.float32), stored_geometry.spacing).mask
        assert not np.array_equal(naive, mask)


def test_the_model_channel_of_a_two_channel_volume_is_predicted(tmp_path):
    t2 = bright_box_volume()
    geometry = Geometry(spacing=(3.0, 0.7, 0.6), origin=(10.0, -5.0, 2.5))
    source = tmp_path / "prostate_16.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([t2, 110.0 - t2], axis=-1).transpose(2, 1, 0, 3), geometry.ras_affine()), source)
    on_t2 = Predictor(BrightPixels(), PreprocessConfig(size=32, channel=0), PostprocessConfig(largest_component=False))
    mask, mask_geometry = read_volume(predict_file(on_t2, source, tmp_path / "t2").mask)
    assert mask.shape == t2.shape and mask_geometry.same_grid(geometry)
    np.testing.assert_array_equal(mask, (t2 > 50).astype(np.uint8))
    adc_mask, _ = read_volume(predict_file(on_t2, source, tmp_path / "adc", channel=1).mask)
    np.testing.assert_array_equal(adc_mask, (t2 < 50).astype(np.uint8))
    single = Predictor(BrightPixels(), PreprocessConfig(size=32))
    with pytest.raises(VolumeError, match=r"prostate_16\.nii\.gz: has 2 channels .* choose one with --channel N"):
        predict_file(single, source, tmp_path / "none")


def test_a_volume_with_nan_or_infinite_voxels_is_refused_naming_the_file(tmp_path):
    image = bright_box_volume().astype(np.float32)
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    source = write_volume(tmp_path / "broken.nii.gz", image, Geometry(spacing=(3.0, 0.7, 0.6)))
    predictor = Predictor(BrightPixels(), PreprocessConfig(size=32))
    with pytest.raises(VolumeError, match=f"^{re.escape(str(source))}: 3 voxels are NaN or infinite$"):
        predict_file(predictor, source, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("flip_tta", [False, True])
@pytest.mark.parametrize("name", ["unet-small", "mobile-unet"])
def test_batched_volume_path_gives_the_per_slice_mask(name, flip_tta):
    """Slices batched (with their mirror images in the same batch under TTA) give what one slice at a time gives."""
    from prokd.models import build_model

    torch.manual_seed(0)
    model = build_model(name, in_channels=3).eval()
    preprocess = PreprocessConfig(size=64, context=1)
    postprocess = PostprocessConfig(flip_tta=flip_tta, threshold=0.5)
    image = np.random.default_rng(0).normal(100, 20, (7, 50, 60)).astype(np.float32)
    batched = Predictor(model, preprocess, postprocess, batch_size=16).predict(image, None)
    one_by_one = Predictor(model, preprocess, postprocess, batch_size=1)
    single = one_by_one.predict(image, None, flip_tta=flip_tta)
    np.testing.assert_allclose(batched.probability, single.probability, atol=1e-5)
    assert 0 < batched.probability.std() and np.array_equal(batched.mask, single.mask)
    if flip_tta:
        plain = one_by_one.predict(image, None, flip_tta=False)
        assert not np.allclose(plain.probability, single.probability, atol=1e-3)
