"""Teacher trust without labels: a teacher that follows the image keeps its prediction under zoom, one tied to its
framing does not, one that sees nothing is not trusted; the ``trust`` aggregation weighs teachers by it, and a run
without labels measures it on the held-out site's images and records it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prokd.config import ConfigError, DistillConfig, PreprocessConfig
from prokd.data.preprocess import GridPlan
from prokd.data.slices import GridCase
from prokd.distill.aggregate import build_aggregator
from prokd.distill.teachers import Teacher
from prokd.distill.trust import ZOOMS, site_trust, volume_trust, zoom_about_centre

SIZE = 64
PRE = PreprocessConfig(size=SIZE, context=0)


class FollowsTheImage(nn.Module):
    """Foreground where the slice is bright: whatever the framing, the prediction moves with the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * (x[:, :1] - 0.5)


class TiedToItsFraming(nn.Module):
    """A disc of fixed size at the grid's centre, whatever the image: what a network that learned one framing does
    on images unlike its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres = (torch.arange(x.shape[-1], dtype=x.dtype) + 0.5) / x.shape[-1] * 2 - 1
        radius = (centres[:, None] ** 2 + centres[None, :] ** 2).sqrt()
        return (200 * (0.4 - radius)).expand(len(x), 1, -1, -1)


class SeesNothing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], -20.0)


def teacher(model: nn.Module, name: str = "t") -> Teacher:
    return Teacher(name, model, PRE, (), score=None, out_channels=1)


def gland_volume(centre: tuple[int, int] = (30, 36), radius: int = 12, slices: int = 5) -> np.ndarray:
    """``(Z, S, S)`` a bright ellipse-free disc off the grid's centre on a dark background."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    disc = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.float32)
    return np.repeat(disc[None], slices, axis=0)


def grid_case(case_id: str, site: str, image: np.ndarray) -> GridCase:
    plan = GridPlan(volume_shape=image.shape, crop_box=(0, SIZE, 0, SIZE), resampled_shape=(SIZE, SIZE),
                    offset=(0, 0), size=SIZE)
    return GridCase(case_id, site, image, None, plan)


def test_zoom_about_centre_maps_back():
    x = torch.from_numpy(gland_volume())[:, None]
    assert torch.allclose(zoom_about_centre(x, 1.0), x, atol=1e-5)
    for zoom in ZOOMS:
        zoomed = zoom_about_centre(x, zoom)
        assert not torch.allclose(zoomed, x)
        back = zoom_about_centre(zoomed, 1 / zoom)
        inner = slice(SIZE // 4, 3 * SIZE // 4)  # every zoom keeps the centre in view
        assert (back - x)[..., inner, inner].abs().mean() < 0.05
    shrunk = zoom_about_centre(torch.ones(1, 1, SIZE, SIZE), 0.5, fill=-1.0)
    assert shrunk[0, 0, 0, 0] == -1.0 and shrunk[0, 0, SIZE // 2, SIZE // 2] == 1.0  # the border is the fill


def test_a_teacher_that_follows_the_image_is_trusted_more_than_one_tied_to_its_framing():
    image = gland_volume()
    follows = volume_trust(teacher(FollowsTheImage()), image, context=0)
    tied = volume_trust(teacher(TiedToItsFraming()), image, context=0)
    assert follows > 0.95
    # a disc zoomed 1.25 and back is 0.8 as wide: Dice 2 * 0.64 / 1.64 = 0.78 (and the same for 0.8)
    assert tied == pytest.approx(2 * 0.64 / 1.64, abs=0.03)
    assert volume_trust(teacher(SeesNothing()), image, context=0) == 0.0


def test_site_trust_is_each_teachers_mean_over_the_sites_volumes():
    teachers = [teacher(FollowsTheImage(), "a"), teacher(TiedToItsFraming(), "b")]
    cases = [grid_case("x0", "SiteX", gland_volume()), grid_case("x1", "SiteX", gland_volume((36, 28), 10)),
             grid_case("u0", "", gland_volume((32, 32), 14))]
    trust = site_trust(teachers, cases)
    assert list(trust) == ["", "SiteX"]
    expected = [np.mean([volume_trust(t, c.image, 0) for c in cases[:2]]) for t in teachers]
    assert trust["SiteX"] == pytest.approx(expected)
    assert trust[""] == pytest.approx([volume_trust(t, cases[2].image, 0) for t in teachers])
    assert trust["SiteX"][0] > trust["SiteX"][1]


def test_trust_weights_sum_to_one_and_follow_the_trust():
    aggregator = build_aggregator("trust", 3, scores={"SiteX": [0.6, 0.4, 0.5], "SiteY": [0.2, 0.7, 0.7]})
    probs = torch.rand(3, 2, 1, 8, 8)
    result = aggregator(probs, sites=["SiteX", "SiteY"])
    weights = result.weights[:, :, 0, 0, 0]
    assert torch.allclose(weights.sum(dim=0), torch.ones(2))
    assert weights[0, 0] > weights[2, 0] > weights[1, 0]
    assert weights[0, 0] / weights[1, 0] == pytest.approx(1.5**64, rel=1e-3)  # default power 64
    assert weights[1, 1] == pytest.approx(weights[2, 1]) and weights[0, 1] < 1e-6


def test_trust_needs_unlabeled_images():
    with pytest.raises(ConfigError, match="trust is measured on unlabeled images"):
        DistillConfig(teachers=["t"], aggregate="trust")
    assert DistillConfig(teachers=["t"], aggregate="trust", unlabeled_fraction=0.5).aggregate == "trust"
