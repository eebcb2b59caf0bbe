"""Attention transfer: match where in the image the student's and teacher's features are active.

Zagoruyko, Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional
Neural Networks via Attention Transfer", ICLR 2017.

The spatial attention map of a feature map ``F`` of shape ``(B, C, H, W)`` is ``A = mean_c |F_c|^p``,
``(B, H, W)``; it needs no adapter, since the channel count disappears. The student's and teacher's maps
are average-pooled to the smaller of the two sizes, flattened and L2-normalised per sample, and compared
by the mean of their squared differences. As the normalised maps have unit norm, this mean is at most
``2 / (H W)`` (non-negative unit vectors), so the term needs a large weight (the paper uses β = 10³).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from prokd.losses.kd_registry import FeatureTerm, register_feature_term

__all__ = ["AttentionTransferLoss", "attention_map"]


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Channel-pooled activation ``mean_c |F_c|^p`` of ``features`` ``(B, C, H, W)``, as ``(B, 1, H, W)``."""
    return features.abs().pow(p).mean(dim=1, keepdim=True)


@register_feature_term("attention")
class AttentionTransferLoss(FeatureTerm):
    """Mean over pairs of the mean squared difference of the normalised attention maps.

    Args:
        student_channels: channels of each student map, in pair order (only checked).
        teacher_channels: channels of the paired teacher maps (only checked).
        p: exponent of the attention map, > 0; the paper uses 2.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int], *, p: float = 2.0) -> None:
        super().__init__(student_channels, teacher_channels)
        if not p > 0:
            raise ValueError(f"AttentionTransferLoss: p must be > 0, got {p}")
        self.p = p

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
        return (self._unit_attention(student, size) - self._unit_attention(teacher, size)).pow(2).mean()

    def _unit_attention(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The attention map of ``features`` ``(B, C, H, W)`` pooled to ``size``, flattened to ``(B, h w)``
        with unit L2 norm per sample (an all-zero map stays zero)."""
        return F.normalize(F.adaptive_avg_pool2d(attention_map(features, self.p), size).flatten(1), dim=1)
