"""Largest connected component inside the bounding box: the same masks as labeling the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from prokd.infer.postprocess import bounding_box, largest_component


def whole_volume_largest(mask: np.ndarray) -> np.ndarray:
    labeled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros(mask.shape, np.uint8)
    sizes = np.bincount(labeled.ravel())
    sizes[0] = 0
    return (labeled == sizes.argmax()).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_the_box_gives_the_whole_volume_result(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((20, 64, 64), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 6))):  # blobs of random size anywhere, touching the borders too
        z, y, x = rng.integers(0, (20, 64, 64))
        dz, dy, dx = rng.integers(1, (6, 20, 20))
        mask[z : z + dz, y : y + dy, x : x + dx] = 1
    mask |= (rng.random(mask.shape) > 0.995).astype(np.uint8)  # speckle: many one-voxel components
    kept = largest_component(mask)
    assert kept.dtype == np.uint8 and kept.shape == mask.shape
    np.testing.assert_array_equal(kept, whole_volume_largest(mask))


def test_an_empty_mask_stays_empty_and_has_no_box():
    mask = np.zeros((4, 8, 8), dtype=np.uint8)
    assert bounding_box(mask) is None
    assert largest_component(mask).sum() == 0


def test_the_box_is_tight():
    mask = np.zeros((4, 8, 8), dtype=bool)
    mask[1, 2, 3] = mask[2, 5, 6] = True
    assert bounding_box(mask) == (slice(1, 3), slice(2, 6), slice(3, 7))
