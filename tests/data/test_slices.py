"""Slice sampling and augmentation: context stacking, foreground-aware draws, determinism per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prokd.config import AugmentConfig
from prokd.data.augment import build_augmentation
from prokd.data.preprocess import GridPlan
from prokd.data.slices import GridCase, SliceSampler, context_stack, volume_inputs

PLAN = GridPlan(volume_shape=(10, 32, 32), crop_box=(0, 32, 0, 32), resampled_shape=(32, 32), offset=(0, 0), size=32)


def grid_case(case_id: str = "c0", foreground=(4, 5)) -> GridCase:
    image = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 32, 32), dtype=np.float32)
    label = np.zeros((10, 32, 32), dtype=np.uint8)
    for z in foreground:
        label[z, 8:24, 8:24] = 1
    return GridCase(case_id, "SiteA", image, label, PLAN)


def test_context_stack_repeats_end_slices():
    image = grid_case().image
    assert context_stack(image, 0, 1)[:, 0, 0].tolist() == [0, 0, 1]
    assert context_stack(image, 9, 2)[:, 0, 0].tolist() == [7, 8, 9, 9, 9]
    inputs = volume_inputs(image, 1)
    assert inputs.shape == (10, 3, 32, 32)
    assert inputs[5, :, 0, 0].tolist() == [4, 5, 6]


def test_foreground_fraction_one_draws_only_foreground_slices():
    sampler = SliceSampler([grid_case()], batch_size=64, context=1, foreground_fraction=1.0)
    batch = sampler.batch(sampler.seed(0))
    x, y = batch.x, batch.y
    assert batch.labeled.all()
    assert x.shape == (64, 3, 32, 32) and y.shape == (64, 1, 32, 32)
    assert set(x[:, 1, 0, 0].tolist()) <= {4.0, 5.0}
    assert (y.flatten(1).sum(1) == 16 * 16).all()


def test_foreground_fraction_zero_draws_every_slice():
    sampler = SliceSampler([grid_case()], batch_size=400, foreground_fraction=0.0)
    x = sampler.batch(sampler.seed(0)).x
    assert set(x[:, 0, 0, 0].tolist()) == set(range(10))


def test_same_seed_same_augmented_batch():
    augmentation = build_augmentation(AugmentConfig(), size=32)
    sampler = SliceSampler([grid_case(), grid_case("c1", (2, 3))], batch_size=8, augmentation=augmentation)
    first = sampler.batch(sampler.seed(7))
    second = sampler.batch(sampler.seed(7))
    other = sampler.batch(sampler.seed(8))
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert not torch.equal(first.x, other.x)
    assert set(torch.unique(first.y).tolist()) <= {0.0, 1.0}


def test_unlabeled_images_are_mixed_in_at_the_given_fraction():
    unlabeled = grid_case("u0")
    unlabeled.label = None
    unlabeled.site = "SiteB"
    unlabeled.image = unlabeled.image + 100.0
    sampler = SliceSampler([grid_case()], batch_size=400, unlabeled=[unlabeled], unlabeled_fraction=0.25)
    batch = sampler.batch(sampler.seed(0))
    from_unlabeled = batch.x[:, 0, 0, 0] >= 100.0
    assert torch.equal(from_unlabeled, ~batch.labeled)
    assert 0.18 < from_unlabeled.float().mean() < 0.32
    assert batch.y[~batch.labeled].sum() == 0
    sites = {"c0": "SiteA", "u0": "SiteB"}
    assert batch.sites == tuple(sites[case_id] for case_id, _ in batch.keys)
    with pytest.raises(ValueError, match="needs unlabeled cases"):
        SliceSampler([grid_case()], batch_size=2, unlabeled_fraction=0.5)


def test_without_labeled_cases_every_sample_is_unlabeled():
    unlabeled = grid_case("u0")
    unlabeled.label = None
    sampler = SliceSampler([], batch_size=64, unlabeled=[unlabeled], unlabeled_fraction=1.0)
    batch = sampler.batch(sampler.seed(0))
    assert not batch.labeled.any() and batch.y.sum() == 0
    assert {case_id for case_id, _ in batch.keys} == {"u0"}
    assert len({z for _, z in batch.keys}) > 5  # any slice, not the labeled foreground ones
    with pytest.raises(ValueError, match="needs labeled cases unless every sample is unlabeled"):
        SliceSampler([], batch_size=2, unlabeled=[unlabeled], unlabeled_fraction=0.5)


def test_augmentation_disabled_is_none():
    assert build_augmentation(AugmentConfig(enabled=False), size=32) is None


def test_unlabeled_cases_are_rejected():
    case = grid_case()
    case.label = None
    with pytest.raises(ValueError, match="c0"):
        SliceSampler([case], batch_size=2)


def label_as_teacher_map(case: GridCase, z: int) -> np.ndarray:
    """A stand-in for cached teacher logits: the slice's label scaled, as one (1, S, S) channel."""
    return 5.0 * case.label[z][None].astype(np.float32)


def test_teacher_maps_move_with_the_spatial_augmentation_only():
    spatial_only = AugmentConfig(flip_prob=0.5, affine_prob=1.0, intensity_prob=0.0, bias_field_prob=0.0,
                                 noise_prob=0.0, contrast_prob=0.0)
    sampler = SliceSampler([grid_case(foreground=(3, 4, 5))], batch_size=16, foreground_fraction=1.0,
                           augmentation=build_augmentation(spatial_only, size=32), teacher_maps=label_as_teacher_map)
    batch = sampler.batch(sampler.seed(3))
    assert batch.teacher.shape == (16, 1, 32, 32)
    moved = (batch.teacher / 5.0 > 0.5).float()
    unmoved = torch.from_numpy(label_as_teacher_map(grid_case(), 4)) / 5.0  # slices 3-5 share one box

    def dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 2 * (a * b).sum(dim=(1, 2, 3)) / (a.sum(dim=(1, 2, 3)) + b.sum(dim=(1, 2, 3)))

    assert dice(moved, batch.y).min() > 0.85, "the teacher map was not moved like the label"
    assert dice(unmoved.expand_as(batch.y), batch.y).min() < 0.7, "the augmentation barely moved anything"

    intensity_only = AugmentConfig(flip_prob=0.0, affine_prob=0.0, intensity_prob=1.0, noise_prob=1.0)
    sampler = SliceSampler([grid_case()], batch_size=8, foreground_fraction=1.0,
                           augmentation=build_augmentation(intensity_only, size=32), teacher_maps=label_as_teacher_map)
    batch = sampler.batch(sampler.seed(0))
    assert torch.equal(batch.teacher, 5.0 * batch.y), "intensity transforms must leave the teacher map alone"
    assert not torch.equal(batch.x[:, :, 0, 0], batch.x.round()[:, :, 0, 0]), "the image was augmented"


def test_no_teacher_maps_no_batch_teacher():
    sampler = SliceSampler([grid_case()], batch_size=2)
    assert sampler.batch(sampler.seed(0)).teacher is None
