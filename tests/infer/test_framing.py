"""Locate-then-segment: the gland's box and extent, reframing only out of the training range, and predictions
that map back to the original grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prokd.config import ConfigError, PostprocessConfig, PreprocessConfig
from prokd.data.preprocess import Preprocessor
from prokd.infer.framing import (
    centred_plan,
    extent_range,
    framing_confidence,
    gland_box,
    grid_extent,
    reframed_plan,
)
from prokd.infer.predict import Predictor


class RecordingBrightPixels(nn.Module):
    """Foreground where the centre channel is above half its brightest value; keeps every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return (x[:, :1] - x.amax() / 2) * 10.0


def box_volume(side: int, size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A (4, size, size) volume, dark, with a bright square gland of ``side`` pixels off-centre, and its mask."""
    image = np.full((4, size, size), 10.0, dtype=np.float32)
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[1:3, 30 : 30 + side, 40 : 40 + side] = 1
    image[mask > 0] = 100.0
    return image, mask


def test_gland_box_is_the_union_footprint_and_none_when_empty():
    mask = np.zeros((3, 20, 30), dtype=np.uint8)
    mask[0, 2:6, 4:8] = 1
    mask[2, 4:12, 6:10] = 1
    box = gland_box(mask)
    assert (box.row, box.col, box.height, box.width, box.extent) == (7.0, 7.0, 10, 6, 10)  # rows 2..11, cols 4..9
    assert gland_box(np.zeros_like(mask)) is None


def test_extent_range_is_the_training_percentiles_of_the_extents_on_the_grid():
    labels = []
    for side in range(10, 60, 5):  # extents 0.1 .. 0.55 of a 100-pixel grid
        label = np.zeros((2, 100, 100), dtype=np.uint8)
        label[0, :side, :side // 2] = 1
        labels.append(label)
    low, high = extent_range(labels + [np.zeros((2, 100, 100), dtype=np.uint8)])  # the empty case is skipped
    assert low == pytest.approx(np.percentile(np.arange(10, 60, 5) / 100, 10))
    assert high == pytest.approx(np.percentile(np.arange(10, 60, 5) / 100, 90))
    assert extent_range([np.zeros((2, 8, 8))]) is None


def test_a_gland_within_the_range_is_not_reframed_and_one_outside_is_brought_to_the_nearer_end():
    preprocessor = Preprocessor(PreprocessConfig(size=50))
    image, mask = box_volume(side=10)
    plan = preprocessor.plan(image.shape)
    box = gland_box(mask)
    assert grid_extent(plan, box) == pytest.approx(0.1)
    assert reframed_plan(plan, box, (0.05, 0.2)) is None
    for extents, target in (((0.3, 0.5), 0.3), ((0.02, 0.05), 0.05)):
        framed = reframed_plan(plan, box, extents)
        assert grid_extent(framed, box) == pytest.approx(target, rel=0.05)
        on_grid = gland_box(preprocessor.label_to_grid(mask, framed))
        assert on_grid.extent / framed.size == pytest.approx(target, abs=0.04)
        assert (on_grid.row, on_grid.col) == pytest.approx((framed.size / 2, framed.size / 2), abs=1.5)


def test_non_square_slices_are_measured_per_axis_and_reframed_keeping_the_pixel_aspect():
    preprocessor = Preprocessor(PreprocessConfig(size=50))
    mask = np.zeros((3, 60, 120), dtype=np.uint8)
    mask[1, 20:32, 40:64] = 1  # 12 x 24 pixels: a 10 x 10 square on the 50 x 50 grid (rows x5/6, cols x5/12)
    plan = preprocessor.plan(mask.shape)
    box = gland_box(mask)
    assert grid_extent(plan, box) == pytest.approx(0.2)
    assert grid_extent(plan, box) == pytest.approx(gland_box(preprocessor.label_to_grid(mask, plan)).extent / 50)
    framed = reframed_plan(plan, box, (0.4, 0.6))
    on_grid = gland_box(preprocessor.label_to_grid(mask, framed))
    assert on_grid.height == pytest.approx(20, abs=1) and on_grid.width == pytest.approx(20, abs=1)
    back = preprocessor.grid_to_volume(preprocessor.label_to_grid(mask, framed).astype(np.float32), framed) > 0.5
    assert 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum()) > 0.95


def test_a_box_reaching_past_the_image_is_padded_and_maps_back():
    preprocessor = Preprocessor(PreprocessConfig(size=40))
    image, mask = box_volume(side=30, size=60)  # gland at rows/cols 30-60 and 40-70: clipped at the border
    mask = mask[:, :, :60]
    plan = preprocessor.plan(mask.shape)
    framed = reframed_plan(plan, gland_box(mask), (0.2, 0.25))
    back = preprocessor.grid_to_volume(preprocessor.label_to_grid(mask, framed).astype(np.float32), framed) > 0.5
    assert 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum()) > 0.95


@pytest.mark.parametrize("side, passes", [(10, 2), (50, 1)])
def test_predictor_reframes_a_small_gland_until_in_range_and_leaves_a_typical_one(side, passes):
    image, mask = box_volume(side)
    model = RecordingBrightPixels()
    postprocess = PostprocessConfig(largest_component=False, relocate=4, gland_extents=(0.3, 0.6))
    prediction = Predictor(model, PreprocessConfig(size=50), postprocess).predict(image, spacing=None)
    # one batch (4 slices) per pass: the small gland is framed at 0.3, then found in range and left: 2 of the 5
    # allowed passes
    assert len(model.seen) == passes
    assert 2 * (prediction.mask & mask).sum() / (prediction.mask.sum() + mask.sum()) > 0.9
    last_grid = model.seen[-1][:, 0].numpy()
    last_grid = last_grid > last_grid.max() / 2
    assert gland_box(last_grid).extent / 50 == pytest.approx(max(side / 100, 0.3), abs=0.04)


class FirstPassOnly(RecordingBrightPixels):
    """Finds the bright gland on its first pass only, nothing after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return logits if len(self.seen) == 1 else torch.full_like(logits, -10.0)


def test_a_reframed_pass_that_finds_nothing_keeps_the_gland_found_before():
    image, mask = box_volume(10)
    model = FirstPassOnly()
    postprocess = PostprocessConfig(largest_component=False, relocate=3, gland_extents=(0.3, 0.6))
    prediction = Predictor(model, PreprocessConfig(size=50), postprocess).predict(image, spacing=None)
    assert len(model.seen) == 2  # the second pass found nothing: no third
    assert 2 * (prediction.mask & mask).sum() / (prediction.mask.sum() + mask.sum()) > 0.9


def test_relocating_without_a_training_range_is_refused():
    postprocess = PostprocessConfig(relocate=1)
    predictor = Predictor(RecordingBrightPixels(), PreprocessConfig(size=50), postprocess)
    with pytest.raises(ValueError, match="postprocess.gland_extents"):
        predictor.predict(box_volume(10)[0], spacing=None)
    with pytest.raises(ConfigError, match="postprocess.gland_extents"):
        PostprocessConfig(gland_extents=(0.5, 0.2))


def test_centred_plan_zooms_about_the_centre_keeping_the_plan_at_zoom_one():
    preprocessor = Preprocessor(PreprocessConfig(size=50))
    image, mask = box_volume(side=10)
    plan = preprocessor.plan(image.shape)
    assert centred_plan(plan, 1.0) is plan
    closer = centred_plan(plan, 2.0)
    assert closer.crop_box == (25, 75, 25, 75) and closer.resampled_shape == (50, 50)
    assert grid_extent(closer, gland_box(mask)) == pytest.approx(2 * grid_extent(plan, gland_box(mask)))
    wider = centred_plan(plan, 0.5)  # the whole image in the central half of the grid, padding around it
    assert wider.crop_box == (0, 100, 0, 100) and wider.resampled_shape == (25, 25)
    back = preprocessor.grid_to_volume(preprocessor.label_to_grid(mask, wider).astype(np.float32), wider) > 0.5
    assert 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum()) > 0.8


def test_framing_confidence_is_the_mean_probability_over_the_mask():
    probability = np.array([[[0.9, 0.7, 0.2]]], dtype=np.float32)
    assert framing_confidence(probability, probability > 0.5) == pytest.approx(0.8)
    assert framing_confidence(probability, np.zeros_like(probability)) == 0.0


class SurerOfLargerGlands(RecordingBrightPixels):
    """Bright pixels as foreground, with logits the sharper the more of the grid they cover: sure of a gland framed
    large, unsure of one framed small."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :1]
        bright = (centre > centre.amax() / 2).float().mean()
        return super().forward(x) * bright * 10


@pytest.mark.parametrize("framings, passes", [([1.0], 1), ([1.0, 2.0], 2), ([2.0, 1.0], 2)])
def test_the_first_pass_keeps_the_most_confident_framing(framings, passes):
    image, mask = box_volume(10)
    model = SurerOfLargerGlands()
    postprocess = PostprocessConfig(largest_component=False, framings=framings)
    prediction = Predictor(model, PreprocessConfig(size=50), postprocess).predict(image, spacing=None)
    assert len(model.seen) == passes
    assert 2 * (prediction.mask & mask).sum() / (prediction.mask.sum() + mask.sum()) > 0.9
    sureness = prediction.probability[mask > 0].mean()
    assert (sureness > 0.99) == (2.0 in framings)  # the zoomed-in framing was kept when offered


def test_framings_must_be_positive_zooms():
    for framings in ([], [1.0, 0.0]):
        with pytest.raises(ConfigError, match="postprocess.framings"):
            PostprocessConfig(framings=framings)
