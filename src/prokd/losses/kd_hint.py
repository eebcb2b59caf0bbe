"""Hint distillation (FitNets): regress the teacher's feature maps from the student's.

Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015.

A student map ``(B, C_s, H_s, W_s)`` is mapped to the teacher's width by a learnt 1x1 convolution (the
"regressor"; a 1x1 conv rather than the paper's larger kernels, as is common since), resized bilinearly
to the teacher map's ``(H_t, W_t)`` and compared with it by mean squared error. The adapters are trainable
parameters of the term, to be optimised together with the student; they are dropped after training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prokd.losses.kd_registry import FeatureTerm, register_feature_term

__all__ = ["HintLoss"]


@register_feature_term("hint")
class HintLoss(FeatureTerm):
    """Mean over pairs of ``MSE(resize(adapter(student)), teacher)``.

    Args:
        student_channels: channels of each student map, in pair order.
        teacher_channels: channels of the paired teacher maps; adapter ``l`` is a 1x1 convolution
            ``student_channels[l] -> teacher_channels[l]`` with PyTorch's default initialisation.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__(student_channels, teacher_channels)
        self.adapters = nn.ModuleList(
            nn.Conv2d(student_c, teacher_c, kernel_size=1)
            for student_c, teacher_c in zip(self.student_channels, self.teacher_channels)
        )

    def pair_loss(self, index: int, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        adapted = self.adapters[index](student)
        if adapted.shape[2:] != teacher.shape[2:]:
            adapted = F.interpolate(adapted, size=teacher.shape[2:], mode="bilinear", align_corners=False)
        return F.mse_loss(adapted, teacher)
