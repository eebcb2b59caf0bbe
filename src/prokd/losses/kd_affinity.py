"""Affinity (pairwise) distillation: match the similarity structure between image regions.

Liu, Chen, Liu, Qin, Luo, Wang, "Structured Knowledge Distillation for Semantic Segmentation", CVPR 2019
(the pairwise term).

Each map ``(B, C, H, W)`` is average-pooled to a common coarse grid ``(h, w)``, whose cells are the
nodes; the affinity of two nodes is the cosine similarity of their feature vectors, giving a
``(B, h w, h w)`` matrix per map. Cosine similarity ignores the channel count, so no adapter is needed.
The loss is the mean squared difference of the student's and the teacher's matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from prokd.losses.kd_registry import FeatureTerm, register_feature_term

__all__ = ["AffinityLoss", "affinity_matrix"]


def affinity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``(B, H W, H W)`` between all pixel pairs of ``features`` ``(B, C, H, W)``;
    pixels with an all-zero feature vector have similarity 0 to every pixel."""
    nodes = F.normalize(features.flatten(2), dim=1)
    return nodes.transpose(1, 2) @ nodes


@register_feature_term("affinity")
class AffinityLoss(FeatureTerm):
    """Mean over pairs of the mean squared difference of the affinity matrices on a common grid.

    Args:
        student_channels: channels of each student map, in pair order (only checked).
        teacher_channels: channels of the paired teacher maps (only checked).
        grid: side of the largest node grid, >= 1; each pair is pooled to ``min(grid, H_s, H_t)`` x
            ``min(grid, W_s, W_t)`` nodes. Memory grows with ``grid⁴``.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int], *, grid: int = 16) -> None:
        super().__init__(student_channels, teacher_channels)
        if grid < 1:
            raise ValueError(f"AffinityLoss: grid must be >= 1, got {grid}")
        self.grid = grid

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        size = (
            min(self.grid, student.shape[2], teacher.shape[2]),
            min(self.grid, student.shape[3], teacher.shape[3]),
        )
        student_affinity = affinity_matrix(F.adaptive_avg_pool2d(student, size))
        teacher_affinity = affinity_matrix(F.adaptive_avg_pool2d(teacher, size))
        return (student_affinity - teacher_affinity).pow(2).mean()
