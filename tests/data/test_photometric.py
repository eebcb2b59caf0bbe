"""Strong photometric views: intensities change, positions do not; cutout squares are zeroed and reported; the
same generator state gives the same view."""

from __future__ import annotations

import pytest
import torch

from prokd.data.photometric import PhotometricPerturbation

NO_CUTOUT = PhotometricPerturbation(cutout=0.0)


def test_cut_out_pixels_are_zero_and_not_kept():
    only_cutout = PhotometricPerturbation(gamma=1.0, bias_field=0.0, contrast=0.0, brightness=0.0, blur=0.0,
                                          noise=0.0, cutout=0.5)
    x = torch.randn(16, 2, 20, 20)
    strong, kept = only_cutout(x, torch.Generator().manual_seed(0))
    assert kept.shape == (16, 1, 20, 20)
    torch.testing.assert_close(strong, torch.where(kept, x, torch.zeros(())))
    cut = (~kept).flatten(1).sum(dim=1)
    assert cut.max() > 0 and cut.max() <= 10 * 10


def test_strong_view_keeps_edges_in_place_and_is_reproducible():
    x = torch.full((8, 1, 32, 32), -3.0)
    x[..., 16:] = 3.0
    views = [NO_CUTOUT(x, torch.Generator().manual_seed(seed))[0] for seed in (0, 0, 1)]
    for view in views:
        assert (view - x).abs().mean() > 0.1, "intensities change"
        jumps = (view[..., 1:] - view[..., :-1]).abs()
        assert (jumps.argmax(dim=-1) == 15).all(), "the largest jump of every row stays between columns 15 and 16"
    assert torch.equal(views[0], views[1])
    assert not torch.equal(views[0], views[2])


def test_invalid_strengths_are_refused():
    with pytest.raises(ValueError, match="gamma must be >= 1"):
        PhotometricPerturbation(gamma=0.5)
    with pytest.raises(ValueError, match="blur, noise must be >= 0"):
        PhotometricPerturbation(blur=-1.0, noise=-0.1)
    with pytest.raises(ValueError, match=r"contrast must be in \[0, 1\)"):
        PhotometricPerturbation(contrast=1.0)


def test_a_draw_split_by_rows_applies_as_the_whole_batch_does():
    """Each process of a data-parallel run draws for the whole global batch and applies its own rows."""
    perturbation = PhotometricPerturbation()
    x = torch.randn(6, 3, 16, 16)
    drawn = perturbation.draw(6, (3, 16, 16), torch.Generator().manual_seed(2))
    whole, whole_kept = perturbation.apply(x, drawn)
    part, part_kept = perturbation.apply(x[2:5], drawn.take(slice(2, 5)))
    torch.testing.assert_close(part, whole[2:5])
    assert torch.equal(part_kept, whole_kept[2:5])
