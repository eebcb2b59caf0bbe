"""Learned teacher gating: a small CNN decides, per pixel, which teacher to trust.

The gate is a mixture-of-experts gating network (Jacobs et al., "Adaptive mixtures of local experts",
Neural Computation 1991) whose experts are the frozen teachers. It sees the image and, per teacher, the
foreground probability and its binary entropy, and outputs softmax weights over the teachers at every
pixel. It is trained alongside the student by :func:`gate_loss`, which asks the aggregate to match the
label on labeled samples; on unlabeled samples (e.g. other sites) it applies what it learned about
which teacher is right on which kind of image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from prokd.distill.aggregate import AggregateResult, Aggregator, normalised_entropy, register_aggregator

if TYPE_CHECKING:
    from prokd.distill.teachers import Teacher

__all__ = ["LearnedAggregator", "gate_loss"]


@register_aggregator("learned")
class LearnedAggregator(Aggregator):
    """Per-pixel teacher weights from a gating CNN: ``weights = softmax_K(gate([image, p_1..p_K, H_1..H_K]))``.

    The gate is three 3x3 convolutions with dilations 1, 2 and 4 (receptive field 15 x 15 pixels) and
    LeakyReLU, then a 1x1 convolution to K logits: about 6 k parameters for one image channel, four
    teachers and 16 features. The last convolution starts at zero, so an untrained gate is the mean
    aggregator.

    Its parameters are the module's :meth:`parameters` and go to the student's optimiser. Train them with
    :func:`gate_loss` only and give the student ``result.probs.detach()`` as its distillation target:
    otherwise the distillation loss would also train the gate to move the target towards the student.

    Args:
        n_teachers: number of teachers K.
        in_channels: channels C of the image (B, C, H, W) the gate sees; ``2 * context + 1`` for 2.5D input.
        features: width of the hidden convolutions.
    """

    def __init__(self, n_teachers: int, in_channels: int = 1, features: int = 16) -> None:
        super().__init__(n_teachers)
        if in_channels < 1 or features < 1:
            raise ValueError(
                f"{type(self).__name__}: in_channels and features must be >= 1, got {in_channels} and {features}"
            )
        self.in_channels = in_channels
        self.gate = nn.Sequential(
            nn.Conv2d(in_channels + 2 * n_teachers, features, kernel_size=3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(features, features, kernel_size=3, padding=2, dilation=2),
            nn.LeakyReLU(0.1),
            nn.Conv2d(features, features, kernel_size=3, padding=4, dilation=4),
            nn.LeakyReLU(0.1),
            nn.Conv2d(features, n_teachers, kernel_size=1),
        )
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)

    @classmethod
    def teacher_arguments(cls, teachers: Sequence[Teacher], in_channels: int, given: dict[str, Any]) -> dict[str, Any]:
        """``in_channels``: the student's input channels, the image the gate sees."""
        return {} if "in_channels" in given else {"in_channels": in_channels}

    def teacher_weights(
        self,
        teacher_probs: torch.Tensor,
        label: torch.Tensor | None,
        labeled: torch.Tensor,
        image: torch.Tensor | None,
        sites: Sequence[str] | None = None,
    ) -> torch.Tensor:
        if image is None or image.shape[1] != self.in_channels:
            shape = None if image is None else tuple(image.shape)
            raise ValueError(f"{type(self).__name__}: needs an image with {self.in_channels} channels, got {shape}")
        per_sample = teacher_probs.movedim(0, 1).flatten(1, 2)
        gate_input = torch.cat([image.to(per_sample.dtype), per_sample, normalised_entropy(per_sample)], dim=1)
        weights = self.gate(gate_input).softmax(dim=1)
        return weights.movedim(1, 0).unsqueeze(2)


def gate_loss(
    result: AggregateResult, label: torch.Tensor, labeled: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Binary cross-entropy of the aggregate against the label, over the pixels of the labeled samples.

    Minimising it trains a learned gate to weigh, on each labeled image, the teachers that are right
    there. For parameter-free aggregators it is just a measure of the target's quality.

    Args:
        result: output of an :class:`~prokd.distill.aggregate.Aggregator`, probs (B, 1, H, W).
        label: (B, 1, H, W) ground truth in {0, 1} (any dtype).
        labeled: (B,) bool, which samples have a real label; None means all.
        eps: the aggregate is clamped to [eps, 1 - eps] so that the loss and its gradient stay finite.

    Returns:
        Scalar mean BCE; 0 (without gradient) when no sample is labeled.
    """
    if tuple(label.shape) != tuple(result.probs.shape):
        raise ValueError(f"gate_loss: label must be {tuple(result.probs.shape)}, got {tuple(label.shape)}")
    if labeled is None:
        labeled = torch.ones(label.shape[0], dtype=torch.bool, device=label.device)
    if not bool(labeled.any()):
        return result.probs.new_zeros(())
    probs = result.probs[labeled].clamp(eps, 1 - eps)
    return F.binary_cross_entropy(probs, label[labeled].to(probs.dtype))
