"""Multi-teacher aggregation: one soft target from the foreground probabilities of K teachers.

Teachers trained on one site each are reliable on their own site and poor elsewhere, so the plain mean
of their outputs can teach a student less than the label alone. An :class:`Aggregator` weighs the
teachers per sample and per pixel and returns the weighted mean

.. math::

    q(x) = \\sum_k w_k(x) \\, p_k(x), \\qquad w_k(x) \\ge 0, \\qquad \\sum_k w_k(x) = 1,

of the teachers' foreground probabilities :math:`p_k` at the distillation temperature (1-logit nets:
``sigmoid(z / T)``, 2-logit nets: ``softmax(z / T)[:, 1]``). Modes, registered by name:

==============  ================================================================================
mean            uniform weights :math:`1 / K`
weighted        fixed per-teacher weights from given scores, e.g. each teacher's Dice on cases it never
                saw, sharpened by a power
site            per-sample weights from each teacher's score on the sample's site (e.g. its validation
                Dice per site), sharpened by a power: the teacher trusted on this hospital's images
trust           per-sample weights from each teacher's trust on the sample's site, measured without labels on
                the student's unlabeled images: how stable its prediction is under zoom
                (:mod:`prokd.distill.trust`), sharpened by a power
adaptive        per-sample, per-pixel weights from each teacher's reliability: agreement with the label
                where there is one, confidence and consensus where there is not; no parameters
entropy         per-pixel weights :math:`\\propto \\exp(-\\beta H(p_k))`: the less uncertain teacher weighs
                more (:mod:`prokd.distill.confidence`)
confidence-max  per pixel, all weight to the most confident teacher (ties shared equally)
                (:mod:`prokd.distill.confidence`)
agreement       the plain mean where the teachers' votes agree, ``entropy`` weights where they disagree
                (:mod:`prokd.distill.confidence`)
learned         a small gating CNN on the image and the teachers' outputs, trained with the student
                (:mod:`prokd.distill.gate`)
==============  ================================================================================

A new mode is one :class:`Aggregator` subclass decorated with :func:`register_aggregator`; a mode that reads
its arguments from the teachers themselves (their scores, their trust) says so in
:meth:`Aggregator.teacher_arguments`, and :func:`build_aggregator_for` fills them in.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from prokd.distill.teachers import Teacher

__all__ = [
    "AdaptiveAggregator",
    "AggregateResult",
    "Aggregator",
    "MeanAggregator",
    "ReliabilityAggregator",
    "SiteAggregator",
    "TrustAggregator",
    "WeightedAggregator",
    "aggregators",
    "build_aggregator",
    "build_aggregator_for",
    "normalised_entropy",
    "register_aggregator",
    "teacher_measurements",
]


@dataclass(frozen=True)
class AggregateResult:
    """The aggregated soft target and the teacher weights that made it.

    Attributes:
        probs: (B, 1, H, W) aggregated foreground probability, ``(weights * teacher_probs).sum(0)``.
        weights: (K, B, 1, H, W) teacher weights, >= 0 and summing to 1 over K at every pixel.
    """

    probs: torch.Tensor
    weights: torch.Tensor


class Aggregator(nn.Module, abc.ABC):
    """Base class: checks the inputs, detaches the teachers and applies the weights of a subclass.

    Args:
        n_teachers: number of teachers K.
    """

    def __init__(self, n_teachers: int) -> None:
        super().__init__()
        if n_teachers < 1:
            raise ValueError(f"{type(self).__name__}: n_teachers must be >= 1, got {n_teachers}")
        self.n_teachers = n_teachers

    @classmethod
    def teacher_arguments(cls, teachers: Sequence[Teacher], in_channels: int, given: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments this mode reads from the ``teachers`` themselves, or from the student's
        ``in_channels``, among those not ``given`` explicitly: none by default.

        Raises:
            ValueError: a teacher lacks what the mode needs (the message names it).
        """
        return {}

    @classmethod
    def teacher_measurements(cls, given: dict[str, Any]) -> frozenset[str]:
        """The :class:`~prokd.distill.teachers.Teacher` attributes :meth:`teacher_arguments` reads that a loaded
        teacher lacks until they are measured (``"site_scores"``, ``"site_trust"``), unless the arguments they
        fill are ``given``: none by default."""
        return frozenset()

    def forward(
        self,
        teacher_probs: torch.Tensor,
        *,
        label: torch.Tensor | None = None,
        labeled: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        sites: Sequence[str] | None = None,
    ) -> AggregateResult:
        """Weigh the teachers and aggregate their probabilities.

        Args:
            teacher_probs: (K, B, 1, H, W) foreground probabilities of the K teachers. They are detached:
                no gradient flows back into the teachers.
            label: (B, 1, H, W) ground truth in {0, 1} (any dtype), or None when no sample is labeled.
            labeled: (B,) bool, which samples of ``label`` are real labels; None means all of them when
                ``label`` is given.
            image: (B, C, H, W) network input, used by modes that look at the image.
            sites: the B samples' sites, used by modes that weigh teachers per site.

        Returns:
            :class:`AggregateResult` with probs (B, 1, H, W) and weights (K, B, 1, H, W).
        """
        teacher_probs = teacher_probs.detach()
        self._check_shapes(teacher_probs, label, image)
        labeled = self._labeled_mask(teacher_probs, label is not None, labeled)
        if label is not None:
            label = label.to(teacher_probs.dtype)
        if sites is not None and len(sites) != teacher_probs.shape[1]:
            raise ValueError(f"{type(self).__name__}: {len(sites)} sites for {teacher_probs.shape[1]} samples")
        weights = self.teacher_weights(teacher_probs, label, labeled, image, sites)
        return AggregateResult(probs=(weights * teacher_probs).sum(dim=0), weights=weights)

    @abc.abstractmethod
    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """(K, B, 1, H, W) weights summing to 1 over K, from checked inputs.

        Args:
            teacher_probs: (K, B, 1, H, W) detached teacher probabilities.
            label: (B, 1, H, W) float label, or None.
            labeled: (B,) bool, all False when ``label`` is None.
            image: (B, C, H, W) or None.
            sites: B site names, or None.
        """

    def _check_shapes(
        self, teacher_probs: torch.Tensor, label: torch.Tensor | None, image: torch.Tensor | None
    ) -> None:
        name = type(self).__name__
        if teacher_probs.ndim != 5 or teacher_probs.shape[0] != self.n_teachers or teacher_probs.shape[2] != 1:
            raise ValueError(
                f"{name}: teacher_probs must be (K={self.n_teachers}, B, 1, H, W), got {tuple(teacher_probs.shape)}"
            )
        _, batch, _, height, width = teacher_probs.shape
        if label is not None and tuple(label.shape) != (batch, 1, height, width):
            raise ValueError(f"{name}: label must be {(batch, 1, height, width)}, got {tuple(label.shape)}")
        if image is not None and (image.ndim != 4 or (image.shape[0], *image.shape[2:]) != (batch, height, width)):
            raise ValueError(f"{name}: image must be ({batch}, C, {height}, {width}), got {tuple(image.shape)}")

    def _labeled_mask(
        self, teacher_probs: torch.Tensor, has_label: bool, labeled: torch.Tensor | None
    ) -> torch.Tensor:
        """(B,) bool mask of the samples with a label."""
        batch = teacher_probs.shape[1]
        if labeled is None:
            return torch.full((batch,), has_label, dtype=torch.bool, device=teacher_probs.device)
        if tuple(labeled.shape) != (batch,) or labeled.dtype != torch.bool:
            raise ValueError(
                f"{type(self).__name__}: labeled must be a bool tensor of shape ({batch},), "
                f"got {labeled.dtype} {tuple(labeled.shape)}"
            )
        if not has_label and bool(labeled.any()):
            raise ValueError(f"{type(self).__name__}: labeled marks samples as labeled but no label was given")
        return labeled.to(teacher_probs.device)


AggregatorClass = TypeVar("AggregatorClass", bound=type[Aggregator])

_REGISTRY: dict[str, type[Aggregator]] = {}


def register_aggregator(name: str) -> Callable[[AggregatorClass], AggregatorClass]:
    """Class decorator registering an :class:`Aggregator` subclass under ``name``; returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorate(cls: AggregatorClass) -> AggregatorClass:
        if name in _REGISTRY:
            raise ValueError(f"aggregator '{name}' is already registered")
        _REGISTRY[name] = cls
        return cls

    return decorate


def aggregators() -> list[str]:
    """Names of the registered aggregators, sorted."""
    return sorted(_REGISTRY)


def _registered(name: str) -> type[Aggregator]:
    """The class registered as ``name``; ValueError listing the registered names if there is none."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown aggregator '{name}'; registered aggregators: {', '.join(aggregators())}")
    return _REGISTRY[name]


def build_aggregator(name: str, n_teachers: int, **kwargs: Any) -> Aggregator:
    """Build the registered aggregator ``name`` for ``n_teachers`` teachers.

    Args:
        name: registry name (see :func:`aggregators`).
        n_teachers: number of teachers K.
        kwargs: the mode's keyword arguments, e.g. ``scores=[0.8, 0.7]`` for ``"weighted"``.

    Raises:
        ValueError: unknown name (the message lists the registered names), or an unknown or missing
            keyword argument (the message lists the accepted ones).
    """
    cls = _registered(name)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]
    accepted = {p.name for p in parameters}
    required = {p.name for p in parameters if p.default is inspect.Parameter.empty}
    unknown, missing = sorted(set(kwargs) - accepted), sorted(required - set(kwargs))
    if unknown or missing:
        raise ValueError(
            f"aggregator '{name}': unknown arguments {unknown}, missing arguments {missing}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )
    return cls(n_teachers, **kwargs)


def build_aggregator_for(name: str, teachers: Sequence[Teacher], in_channels: int, **kwargs: Any) -> Aggregator:
    """Build the registered aggregator ``name`` for ``teachers``: ``kwargs`` (a config's ``aggregate_kwargs``)
    plus the arguments the mode reads from the teachers (:meth:`Aggregator.teacher_arguments`; ``kwargs`` win).

    Args:
        name: registry name (see :func:`aggregators`).
        teachers: the K frozen teachers.
        in_channels: channels of the student's input (B, C, H, W), for modes that look at the image.
        kwargs: the mode's keyword arguments.

    Raises:
        ValueError: as :func:`build_aggregator`, or a teacher lacks what the mode needs.
    """
    derived = _registered(name).teacher_arguments(teachers, in_channels, kwargs)
    return build_aggregator(name, len(teachers), **derived, **kwargs)


def teacher_measurements(name: str, kwargs: dict[str, Any]) -> frozenset[str]:
    """What the registered aggregator ``name`` with the keyword arguments ``kwargs`` needs measured on its teachers
    before :func:`build_aggregator_for` (:meth:`Aggregator.teacher_measurements`)."""
    return _registered(name).teacher_measurements(kwargs)


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Binary entropy of foreground probabilities in bits: 0 for p in {0, 1}, 1 for p = 0.5.

    Args:
        probs: probabilities of any shape.

    Returns:
        Same shape, values in [0, 1].
    """
    return (torch.special.entr(probs) + torch.special.entr(1 - probs)) / math.log(2)


@register_aggregator("weighted")
class WeightedAggregator(Aggregator):
    """Fixed per-teacher weights from scores: :math:`w_k = s_k^\\gamma / \\sum_j s_j^\\gamma` at every pixel.

    Args:
        n_teachers: number of teachers K.
        scores: K non-negative reliability scores, e.g. each teacher's validation Dice on cases it never
            saw (not its own site's training cases, which flatter it).
        power: sharpening exponent :math:`\\gamma \\ge 0`; 1 makes the weights proportional to the scores,
            0 uniform, and a large power approaches picking the best-scored teacher.
    """

    def __init__(self, n_teachers: int, scores: Sequence[float], power: float = 1.0) -> None:
        super().__init__(n_teachers)
        if len(scores) != n_teachers:
            raise ValueError(f"{type(self).__name__}: expected {n_teachers} scores, got {len(scores)}")
        if not all(math.isfinite(score) and score >= 0 for score in scores) or not any(score > 0 for score in scores):
            raise ValueError(f"{type(self).__name__}: scores must be finite, >= 0, with one > 0; got {list(scores)}")
        if not (math.isfinite(power) and power >= 0):
            raise ValueError(f"{type(self).__name__}: power must be finite and >= 0, got {power}")
        powered = torch.tensor(scores, dtype=torch.float64) ** power
        self.register_buffer("teacher_share", (powered / powered.sum()).to(torch.float32))

    @classmethod
    def teacher_arguments(cls, teachers: Sequence[Teacher], in_channels: int, given: dict[str, Any]) -> dict[str, Any]:
        """``scores``: each teacher's best validation Dice."""
        if "scores" in given:
            return {}
        missing = [t.name for t in teachers if t.score is None]
        if missing:
            raise ValueError(f"weighted aggregation needs a validation score for every teacher; none for {missing}")
        return {"scores": [t.score for t in teachers]}

    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        share = self.teacher_share.to(teacher_probs.dtype).view(-1, 1, 1, 1, 1)
        return share.expand_as(teacher_probs)


@register_aggregator("site")
class SiteAggregator(Aggregator):
    """Per-sample weights from each teacher's score on the sample's site:
    :math:`w_k(s) = s_{k,s}^\\gamma / \\sum_j s_{j,s}^\\gamma` at every pixel of a sample from site :math:`s`.

    Limit-trained teachers are experts on the site they were trained on; a manifest with site labels says
    which site an image comes from, and each teacher's Dice on the validation cases of every site (cases it
    never saw) says how far to trust it there. A sample from a site without scores gets the weights of the
    teachers' mean score over the known sites; a site where every teacher scores 0 gets uniform weights.

    Args:
        n_teachers: number of teachers K.
        scores: ``{site: K non-negative scores}``.
        power: sharpening exponent :math:`\\gamma \\ge 0`; with the default 4, Dice scores of 0.8 and 0.4 give
            weights in the ratio 16 : 1, while teachers of similar scores keep similar weights.
    """

    measured: ClassVar[str] = "site_scores"
    """The :class:`~prokd.distill.teachers.Teacher` attribute the ``scores`` come from, measured before building."""

    def __init__(self, n_teachers: int, scores: dict[str, Sequence[float]], power: float = 4.0) -> None:
        super().__init__(n_teachers)
        name = type(self).__name__
        if not scores:
            raise ValueError(f"{name}: scores must give K scores for at least one site")
        for site, values in scores.items():
            if len(values) != n_teachers or not all(math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"{name}: site {site!r} needs {n_teachers} finite scores >= 0, got {list(values)}")
        if not (math.isfinite(power) and power >= 0):
            raise ValueError(f"{name}: power must be finite and >= 0, got {power}")
        self.sites = list(scores)
        table = torch.tensor([list(scores[site]) for site in self.sites], dtype=torch.float64)
        powered = torch.cat([table, table.mean(dim=0, keepdim=True)]) ** power
        totals = powered.sum(dim=1, keepdim=True)
        share = torch.where(totals > 0, powered / totals.clamp_min(1e-300), torch.full_like(powered, 1 / n_teachers))
        self.register_buffer("site_share", share.to(torch.float32), persistent=False)

    @classmethod
    def teacher_arguments(cls, teachers: Sequence[Teacher], in_channels: int, given: dict[str, Any]) -> dict[str, Any]:
        """``scores``: each teacher's validation Dice per site; a teacher without a score for a site gets its
        overall score (0 if it has none)."""
        if "scores" in given:
            return {}
        missing = [t.name for t in teachers if not t.site_scores]
        if missing:
            raise ValueError(f"site aggregation needs validation scores per site for every teacher; none for {missing}")
        sites = sorted({site for t in teachers for site in t.site_scores})
        return {"scores": {site: [t.site_scores.get(site, t.score or 0.0) for t in teachers] for site in sites}}

    @classmethod
    def teacher_measurements(cls, given: dict[str, Any]) -> frozenset[str]:
        """:attr:`measured`, unless ``scores`` are given."""
        return frozenset() if "scores" in given else frozenset({cls.measured})

    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        unknown = len(self.sites)
        rows = [self.sites.index(s) if s in self.sites else unknown for s in (sites or [None] * labeled.numel())]
        share = self.site_share[rows].T  # (K, B)
        return share[:, :, None, None, None].expand_as(teacher_probs).to(teacher_probs.dtype)


@register_aggregator("trust")
class TrustAggregator(SiteAggregator):
    """Per-sample weights from each teacher's trust on the sample's site, measured without labels:
    :math:`w_k(s) = t_{k,s}^\\gamma / \\sum_j t_{j,s}^\\gamma`, where :math:`t_{k,s}` is how stable teacher k's
    prediction is under zoom on site s's unlabeled images (:func:`~prokd.distill.trust.site_trust`).

    The ``site`` weights for a hospital whose labels nobody has (regime C): the same per-site table, with a
    teacher's label-free trust where ``site`` has its validation Dice. The default power all but picks the most
    trusted teacher (trusts of 0.60 and 0.55 give weights in the ratio 260 : 1): with each PROMISE12 site left out
    in turn, the power that gave the highest trust-weighted Dice on the other three sites was the largest tried,
    64, in every fold (``python benchmarks/teacher_trust.py``, BENCHMARKS.md ``teacher-trust``).

    The weights are per site, not per volume: a site's mean trust averages out the noise of single volumes.

    Args:
        n_teachers: number of teachers K.
        scores: ``{site: K trusts in [0, 1]}``.
        power: sharpening exponent :math:`\\gamma \\ge 0`.
    """

    measured: ClassVar[str] = "site_trust"

    def __init__(self, n_teachers: int, scores: dict[str, Sequence[float]], power: float = 64.0) -> None:
        super().__init__(n_teachers, scores, power)

    @classmethod
    def teacher_arguments(cls, teachers: Sequence[Teacher], in_channels: int, given: dict[str, Any]) -> dict[str, Any]:
        """``scores``: each teacher's trust per site (``Teacher.site_trust``, measured together on the same
        sites)."""
        if "scores" in given:
            return {}
        missing = [t.name for t in teachers if not t.site_trust]
        if missing:
            raise ValueError(f"trust aggregation needs every teacher's trust on the student's unlabeled images; "
                             f"none for {missing}")
        return {"scores": {site: [t.site_trust[site] for t in teachers] for site in teachers[0].site_trust}}


@register_aggregator("mean")
class MeanAggregator(WeightedAggregator):
    """Uniform weights :math:`1 / K`: the plain mean of the teachers.

    Args:
        n_teachers: number of teachers K.
    """

    def __init__(self, n_teachers: int) -> None:
        super().__init__(n_teachers, scores=[1.0] * n_teachers)

    @classmethod
    def teacher_arguments(cls, teachers: Sequence[Teacher], in_channels: int, given: dict[str, Any]) -> dict[str, Any]:
        """None: every teacher weighs the same."""
        return {}


class ReliabilityAggregator(Aggregator):
    """Base of the modes whose weights are a softmax over teachers of a per-pixel reliability
    :math:`r_k(x) \\in [0, 1]`: :math:`w_k(x) = \\exp(\\beta r_k(x)) / \\sum_j \\exp(\\beta r_j(x))`.

    A subclass gives :meth:`reliability`; :meth:`local_mean` smooths its maps over a ``window`` x ``window``
    neighbourhood, so that weights vary smoothly instead of flipping from pixel to pixel.

    Args:
        n_teachers: number of teachers K.
        beta: softmax sharpness :math:`\\beta > 0`; reliabilities 0.1 apart give weights in the ratio
            :math:`e^{0.1 \\beta}`.
        window: odd side, in pixels, of the smoothing window (1 disables smoothing).
    """

    def __init__(self, n_teachers: int, beta: float, window: int) -> None:
        super().__init__(n_teachers)
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"{type(self).__name__}: beta must be finite and > 0, got {beta}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"{type(self).__name__}: window must be an odd number >= 1, got {window}")
        self.beta = beta
        self.window = window

    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        return torch.softmax(self.beta * self.reliability(teacher_probs, label, labeled), dim=0)

    @abc.abstractmethod
    def reliability(
        self, teacher_probs: torch.Tensor, label: torch.Tensor | None, labeled: torch.Tensor
    ) -> torch.Tensor:
        """(K, B, 1, H, W) reliability of each teacher in [0, 1], from checked inputs.

        Args:
            teacher_probs: (K, B, 1, H, W) detached teacher probabilities.
            label: (B, 1, H, W) float label, or None.
            labeled: (B,) bool, all False when ``label`` is None.
        """

    def local_mean(self, maps: torch.Tensor) -> torch.Tensor:
        """(K, B, 1, H, W) maps averaged over ``window`` x ``window`` pixels (clipped at the border), same shape.

        The box mean is separable, also where the border clips it (sum and count both factor into rows and
        columns), so it runs as a row pass then a column pass: 2w instead of w² operations per pixel.
        """
        half = self.window // 2
        flat = maps.flatten(0, 1)
        rows = F.avg_pool2d(flat, (1, self.window), stride=1, padding=(0, half), count_include_pad=False)
        pooled = F.avg_pool2d(rows, (self.window, 1), stride=1, padding=(half, 0), count_include_pad=False)
        return pooled.view_as(maps)


@register_aggregator("adaptive")
class AdaptiveAggregator(ReliabilityAggregator):
    """Per-sample, per-pixel weights from each teacher's reliability, without parameters.

    The weights are the softmax over teachers of a reliability :math:`r_k(x) \\in [0, 1]`
    (:class:`ReliabilityAggregator`). Below, :math:`\\bar{f}` is a map :math:`f` average-pooled over a
    ``window`` x ``window`` neighbourhood (:meth:`~ReliabilityAggregator.local_mean`; borders average the
    pixels inside the image).

    Labeled sample (label :math:`y`): agreement with the ground truth,

    .. math::

        r_k = \\tfrac12 \\big( \\overline{1 - |p_k - y|} + \\mathrm{Dice}(p_k, y) \\big),

    with the per-sample soft Dice :math:`(2 \\sum p_k y + 1) / (\\sum p_k + \\sum y + 1)` (smoothed by one
    pixel, so a teacher that predicts nothing on an empty slice scores 1).

    Unlabeled sample: confidence :math:`c_k = 1 - H(p_k)` (binary entropy in bits, as in Kwon et al.,
    "Adaptive knowledge distillation based on entropy", ICASSP 2020) and consensus with the other teachers
    :math:`a_k = 1 - |p_k - \\frac{1}{K-1} \\sum_{j \\ne k} p_j|`, plus a per-sample confidence
    :math:`C_k`,

    .. math::

        r_k = \\tfrac13 \\big( \\bar{c}_k + \\bar{a}_k + C_k \\big), \\qquad
        C_k = \\frac{\\sum_x m(x) \\, c_k(x)}{\\sum_x m(x) + \\epsilon}, \\quad m(x) = \\max_j p_j(x).

    :math:`C_k` is the teacher's mean confidence over the candidate foreground (where any teacher sees
    prostate), rather than over the whole image, where background that every teacher gets right would
    dilute it; a teacher that is confused on this image (typically an image from another site) thus
    loses weight everywhere on it. A teacher that is uncertain loses :math:`\\bar{c}_k` and
    :math:`C_k`; one that is confidently wrong against the others loses :math:`\\bar{a}_k`. With one
    teacher the weights are 1 whatever the reliability.

    Args:
        n_teachers: number of teachers K.
        beta: softmax sharpness :math:`\\beta > 0`; reliabilities 0.1 apart give weights in the ratio
            :math:`e^{0.1 \\beta}` (e.g. 2.7 for the default 10).
        window: odd side, in pixels, of the smoothing window (1 disables smoothing).
    """

    def __init__(self, n_teachers: int, beta: float = 10.0, window: int = 7) -> None:
        super().__init__(n_teachers, beta, window)

    def reliability(
        self, teacher_probs: torch.Tensor, label: torch.Tensor | None, labeled: torch.Tensor
    ) -> torch.Tensor:
        reliability = self.unlabeled_reliability(teacher_probs)
        if label is not None and bool(labeled.any()):
            supervised = self.labeled_reliability(teacher_probs, label)
            reliability = torch.where(labeled.view(1, -1, 1, 1, 1), supervised, reliability)
        return reliability

    def labeled_reliability(self, teacher_probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """(K, B, 1, H, W) agreement of each teacher with the label (B, 1, H, W), in [0, 1]."""
        pixel_agreement = self.local_mean(1 - (teacher_probs - label).abs())
        overlap = (teacher_probs * label).sum(dim=(2, 3, 4), keepdim=True)
        mass = teacher_probs.sum(dim=(2, 3, 4), keepdim=True) + label.sum(dim=(1, 2, 3), keepdim=True)
        dice = (2 * overlap + 1) / (mass + 1)
        return (pixel_agreement + dice) / 2

    def unlabeled_reliability(self, teacher_probs: torch.Tensor) -> torch.Tensor:
        """(K, B, 1, H, W) confidence and consensus of each teacher, in [0, 1]."""
        confidence = 1 - normalised_entropy(teacher_probs)
        others = (teacher_probs.sum(dim=0, keepdim=True) - teacher_probs) / max(self.n_teachers - 1, 1)
        consensus = 1 - (teacher_probs - others).abs()
        candidate = teacher_probs.amax(dim=0, keepdim=True)
        image_confidence = (candidate * confidence).sum(dim=(2, 3, 4), keepdim=True) / (
            candidate.sum(dim=(2, 3, 4), keepdim=True) + 1e-6
        )
        return (self.local_mean(confidence) + self.local_mean(consensus) + image_confidence) / 3
