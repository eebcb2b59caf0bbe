"""Site inference: the site of an image that comes without one, as its nearest site in the teachers' feature space.

The ``site`` aggregation weighs the teachers by their score on each sample's site, but unlabeled images often come
without a site. Each limit-trained teacher was trained on the images of one site, and those images show what that
site looks like to the teachers. A slice is described by the statistics of the teachers' feature maps: for every
feature tap of every teacher, each channel's mean and standard deviation over the slice (global average and
standard-deviation pooling), concatenated; a volume by the mean of its slices' descriptors. A site is described by
a centroid, the mean descriptor of its teachers' training volumes, and a per-dimension spread, the standard
deviation of their slice descriptors (over slices rather than volumes, so that it exists for a site with one
training volume). A volume of unknown site goes to the site at the smallest standardised distance

.. math::

    d_s(v) = \\sqrt{\\frac{1}{D} \\sum_{i=1}^{D} \\Big( \\frac{v_i - \\mu_{s,i}}{\\sigma_{s,i}} \\Big)^2},

and the margin, the second-smallest distance minus the smallest, says how clear the choice was.

This is a nearest-class-mean classifier under a diagonal Mahalanobis distance on deep features, the way Lee et al.
("A simple unified framework for detecting out-of-distribution samples and adversarial attacks", NeurIPS 2018) use
class-conditional Gaussians of a network's features to tell which distribution an input comes from. Channel means
and standard deviations are the "style" of an image in the sense of Huang and Belongie ("Arbitrary style transfer
in real-time with adaptive instance normalization", ICCV 2017), and what tells scanners apart (contrast, noise,
bias field, field of view) is style more than anatomy; hence every tap, shallow ones included, rather than the
deepest alone. In an exploratory check on the phantom (unet-small site teachers after 2 and after 30 training steps,
three volumes per site to fit, twelve held-out volumes), the deepest tap's channel means alone placed 8 and 10 of
the held-out volumes at their site, every tap's means and standard deviations 10 and 12.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prokd.config import ConfigError
from prokd.data.datalist import UNKNOWN_SITE, CaseIndex
from prokd.data.slices import GridCase, volume_inputs
from prokd.distill.teachers import Teacher, in_chunks, training_cases

__all__ = ["SiteCentroids", "SiteGuess", "fit_site_centroids", "infer_sites", "slice_descriptors", "teacher_site"]

RELATIVE_SPREAD_FLOOR = 1e-2
"""Smallest per-dimension spread, as a fraction of the mean spread over all sites and dimensions: a feature that
is constant on a site's training slices (a channel none of them activates) would otherwise divide by zero."""


@dataclass(frozen=True)
class SiteGuess:
    """The inferred site of one volume.

    Attributes:
        site: the nearest site.
        distance: its standardised distance to that site's centroid.
        margin: the second-nearest site's distance minus ``distance`` (>= 0; the larger, the clearer).
        distances: every site's standardised distance.
    """

    site: str
    distance: float
    margin: float
    distances: dict[str, float]


@dataclass(frozen=True)
class SiteCentroids:
    """Where each site's volumes lie in descriptor space.

    Attributes:
        sites: the S site names.
        centroids: (S, D) mean volume descriptor of each site.
        spreads: (S, D) per-dimension spread of each site's slice descriptors, > 0.
    """

    sites: tuple[str, ...]
    centroids: torch.Tensor
    spreads: torch.Tensor

    def distances(self, descriptor: torch.Tensor) -> torch.Tensor:
        """(S,) standardised distance of a (D,) volume descriptor to each site's centroid."""
        return ((descriptor - self.centroids) / self.spreads).square().mean(dim=1).sqrt()

    def nearest(self, descriptor: torch.Tensor) -> SiteGuess:
        """The site nearest to a (D,) volume descriptor, with its distance and margin."""
        distances = self.distances(descriptor)
        (nearest, runner_up), (index, _) = torch.topk(distances, 2, largest=False)
        return SiteGuess(
            site=self.sites[int(index)],
            distance=float(nearest),
            margin=float(runner_up - nearest),
            distances={site: float(d) for site, d in zip(self.sites, distances)},
        )


def slice_descriptors(teachers: Sequence[Teacher], image: np.ndarray) -> torch.Tensor:
    """(Z, D) descriptors of the Z slices of ``image`` (Z, S, S), on the student's grid: for every feature tap of
    every teacher, each channel's mean and standard deviation over the slice (D: twice the taps' channels)."""
    context = max(teacher.preprocess.context for teacher in teachers)
    inputs = torch.from_numpy(volume_inputs(image, context))
    return in_chunks(lambda batch: _feature_statistics(teachers, batch), inputs)


def _feature_statistics(teachers: Sequence[Teacher], x: torch.Tensor) -> torch.Tensor:
    """(B, D) channel means and standard deviations of the teachers' tapped maps for the slices ``x`` (B, C, S, S)."""
    statistics = []
    for teacher in teachers:
        _, features = teacher(x, with_features=True)
        for feature_map in features.values():
            spread, mean = torch.std_mean(feature_map, dim=(2, 3), correction=0)
            statistics += [mean, spread]
    return torch.cat(statistics, dim=1)


def fit_site_centroids(descriptors: Mapping[str, Sequence[torch.Tensor]]) -> SiteCentroids:
    """Each site's centroid (the mean of its volumes' mean slice descriptors, each volume counting once) and
    spread (the standard deviation of all its slice descriptors, floored at :data:`RELATIVE_SPREAD_FLOOR` of
    the mean spread).

    Args:
        descriptors: ``{site: [(Z_i, D) slice descriptors of each of its training volumes]}``.

    Raises:
        ValueError: fewer than two sites, or a site without volumes.
    """
    empty = [site for site, volumes in descriptors.items() if not volumes]
    if len(descriptors) < 2 or empty:
        raise ValueError(
            f"site inference needs training volumes of at least two sites; got sites {sorted(descriptors)}"
            + (f", without volumes for {empty}" if empty else "")
        )
    sites = tuple(descriptors)
    centroids = torch.stack([torch.stack([v.mean(dim=0) for v in descriptors[site]]).mean(dim=0) for site in sites])
    spreads = torch.stack([torch.cat(list(descriptors[site])).std(dim=0, correction=0) for site in sites])
    floor = RELATIVE_SPREAD_FLOOR * spreads.mean() + torch.finfo(spreads.dtype).tiny
    return SiteCentroids(sites, centroids, spreads.clamp_min(floor))


def infer_sites(
    teachers: Sequence[Teacher], training_images: Mapping[str, Sequence[GridCase]], cases: Sequence[GridCase]
) -> dict[str, SiteGuess]:
    """``{case id: inferred site}`` for ``cases``, by the nearest centroid fitted on ``training_images``.

    Args:
        teachers: the frozen teachers whose features describe the volumes.
        training_images: ``{site: the training cases of the teachers of that site}``, on the student's grid.
        cases: volumes to place, on the student's grid.
    """
    centroids = fit_site_centroids(
        {site: [slice_descriptors(teachers, case.image) for case in images] for site, images in training_images.items()}
    )
    return {case.case_id: centroids.nearest(slice_descriptors(teachers, case.image).mean(dim=0)) for case in cases}


def teacher_site(run: str | Path, index: CaseIndex) -> str:
    """The site of a teacher: the one site its training cases (:func:`~prokd.distill.teachers.training_cases`)
    have in ``index``.

    Raises:
        ConfigError: a training case is not in ``index``, or the cases have no site or several.
    """
    try:
        sites = sorted({index.case(case_id).site for case_id in training_cases(run)})
    except KeyError as err:
        raise ConfigError(f"distill.infer_sites: teacher {run}: {err.args[0]}") from None
    if sites == [UNKNOWN_SITE] or len(sites) > 1:
        found = "cases without a site" if sites == [UNKNOWN_SITE] else f"cases of sites {', '.join(sites)}"
        raise ConfigError(f"distill.infer_sites needs teachers trained on one site each; teacher {run} was "
                          f"trained on {found}")
    return sites[0]
