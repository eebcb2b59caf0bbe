"""Confidence-based aggregation: at each pixel, trust the teachers that are sure of themselves.

An image with neither a label nor a site gives no external sign of which teacher to follow; what is left is how
sure each teacher is. A teacher trained on one site tends to be confident on images like its own and hesitant
on others, so its certainty at a pixel is a label-free proxy for its reliability there. Three rules, registered
as aggregation modes (:mod:`prokd.distill.aggregate`):

* ``entropy``: soft weights that fall with each teacher's binary entropy;
* ``confidence-max``: all weight to the most confident teacher;
* ``agreement``: the plain mean where the teachers' votes agree, ``entropy`` weights where they do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prokd.distill.aggregate import Aggregator, ReliabilityAggregator, normalised_entropy, register_aggregator

__all__ = ["AgreementAggregator", "ConfidenceMaxAggregator", "EntropyAggregator"]


@register_aggregator("entropy")
class EntropyAggregator(ReliabilityAggregator):
    """Per-pixel weights that decrease exponentially with each teacher's uncertainty:

    .. math::

        w_k(x) = \\frac{\\exp(-\\beta \\bar{H}_k(x))}{\\sum_j \\exp(-\\beta \\bar{H}_j(x))},

    where :math:`H_k = H(p_k)` is the binary entropy of teacher k's foreground probability in bits
    (:func:`~prokd.distill.aggregate.normalised_entropy`: 0 when sure, 1 at p = 0.5) and :math:`\\bar{H}_k` its
    mean over a ``window`` x ``window`` neighbourhood (no smoothing for ``window`` 1). It is the softmax of the
    reliability :math:`1 - \\bar{H}_k` (:class:`~prokd.distill.aggregate.ReliabilityAggregator`). Entropy as
    the measure of how far to trust a teacher follows Kwon et al., "Adaptive knowledge distillation based on
    entropy", ICASSP 2020; here it weighs teachers against each other, pixel by pixel.

    Weights are (K, B, 1, H, W) for teacher probabilities (K, B, 1, H, W); labels and sites are ignored.

    Args:
        n_teachers: number of teachers K.
        beta: sharpness :math:`\\beta > 0`; a teacher sure of a pixel (H = 0) outweighs one at p = 0.5
            (H = 1) by :math:`e^\\beta` (148 for the default 5).
        window: odd side, in pixels, of the entropy's smoothing window (1: none).
    """

    def __init__(self, n_teachers: int, beta: float = 5.0, window: int = 1) -> None:
        super().__init__(n_teachers, beta, window)

    def reliability(
        self, teacher_probs: torch.Tensor, label: torch.Tensor | None, labeled: torch.Tensor
    ) -> torch.Tensor:
        return self.local_mean(1 - normalised_entropy(teacher_probs))


@register_aggregator("confidence-max")
class ConfidenceMaxAggregator(Aggregator):
    """Per pixel, all weight to the most confident teacher: the one whose foreground probability is farthest
    from 0.5,

    .. math::

        w_k(x) = \\frac{[c_k(x) = \\max_j c_j(x)]}{\\#\\{j : c_j(x) = \\max_i c_i(x)\\}}, \\qquad
        c_k(x) = |p_k(x) - 0.5|,

    so that teachers exactly tied for the largest confidence share the weight equally. Binary entropy falls as
    :math:`|p - 0.5|` grows, so this is the winner-take-all limit (:math:`\\beta \\to \\infty`, no smoothing)
    of ``entropy`` (Kwon et al., ICASSP 2020): the soft target at each pixel is one teacher's own probability.

    Weights are (K, B, 1, H, W) for teacher probabilities (K, B, 1, H, W); labels and sites are ignored.

    Args:
        n_teachers: number of teachers K.
    """

    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        confidence = (teacher_probs - 0.5).abs()
        most_confident = (confidence == confidence.amax(dim=0, keepdim=True)).to(teacher_probs.dtype)
        return most_confident / most_confident.sum(dim=0, keepdim=True)


@register_aggregator("agreement")
class AgreementAggregator(EntropyAggregator):
    """Agreement-gated weights: the plain mean where the teachers agree, confidence weights where they do not.

    Each teacher votes foreground at a pixel when its probability is above 0.5 and background otherwise
    (p = 0.5 is a background vote, as for the 0.5 threshold of a mask). At a pixel
    where all K votes are the same the weights are uniform, :math:`w_k(x) = 1 / K`; at a pixel where at least
    one vote differs they are the ``entropy`` weights :math:`w_k(x) \\propto \\exp(-\\beta \\bar{H}_k(x))` of
    :class:`EntropyAggregator`, with :math:`\\bar{H}_k` smoothed over the whole image (agreeing pixels
    included). With one teacher the votes always agree and its weight is 1.

    Where the teachers agree, averaging keeps their soft boundaries and lets no single overconfident teacher
    dictate the target; where they disagree, one of them is wrong and the surer one is more likely to be on
    images like its own. Trusting a prediction on an unlabeled example because the other models agree with it
    is the rule of tri-training (Zhou and Li, "Tri-training: exploiting unlabeled data using three
    classifiers", IEEE TKDE 2005); majority voting is the usual label fusion of several segmentations.

    Weights are (K, B, 1, H, W) for teacher probabilities (K, B, 1, H, W); labels and sites are ignored.

    Args:
        n_teachers: number of teachers K.
        beta: sharpness of the ``entropy`` weights where the votes differ (see :class:`EntropyAggregator`).
        window: odd side, in pixels, of the entropy's smoothing window (1: none).
    """

    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        votes = teacher_probs > 0.5
        unanimous = (votes == votes[:1]).all(dim=0, keepdim=True)
        confident = super().teacher_weights(teacher_probs, label, labeled, image, sites)
        return torch.where(unanimous, torch.full_like(confident, 1 / self.n_teachers), confident)
