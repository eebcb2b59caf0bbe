"""Depthwise-separable U-Net with an early down-sampling stem: a student built for CPU speed.

The encoder follows MobileNet (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", arXiv:1704.04861, 2017): every 3x3 convolution is split into a depthwise 3x3 and a
pointwise 1x1 convolution, which cuts its multiply-accumulates by about ``1/C_out + 1/9``. Like ENet (Paszke
et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation", arXiv:1606.02147,
2016) it halves the resolution in its first layer, so no layer runs at full resolution; the logits are
computed at 1/2 and bilinearly upsampled, which a smooth organ boundary such as the prostate's tolerates.
The decoder is a U-Net's (Ronneberger et al., MICCAI 2015): bilinear upsampling, concatenated skip, one
separable block per level.

Small eager convolutions are bound by per-layer overhead, not by arithmetic, so the layer count is kept low:
a separable block is depthwise, pointwise, normalisation and ReLU, with no normalisation between the two
convolutions. With batch norm, ONNX Runtime folds every normalisation into the preceding convolution at load
time, leaving two fused kernels per block. Batch norm is the default for that reason; ``norm="instance"`` is
the batch-independent alternative (as in :mod:`prokd.models.unet`), slower on ONNX Runtime because it cannot
be folded.

Shapes: input ``(B, C_in, H, W)``, any size (each upsampling goes to its skip's size; multiples of
``2 ** len(channels)`` avoid uneven borders); the stem's output is at 1/2, encoder level ``i`` (``down.{i-1}``)
at ``1/2**(i+1)``; the default taps are the stem and the three levels below it, at 1/2, 1/4, 1/8 and 1/16, like the
U-Nets' taps.

The registered configuration was chosen on the PROMISE12 validation cases (fixed split, 1500 steps from scratch,
``configs/promise12_train.yaml``): channels 16-256 reached a validation Dice of 0.875, 16-128 (0.06 M) 0.820. On
ONNX Runtime with 2 threads it runs a 3 x 160 x 160 slice in 2.1 ms against 18.3 ms for ``unet-large``
(BENCHMARKS.md, ``deploy``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prokd.models.registry import register_model

__all__ = ["MobileUNet", "SeparableBlock", "mobile_unet"]

NORMS = {"batch": nn.BatchNorm2d, "instance": lambda channels: nn.InstanceNorm2d(channels, affine=True)}


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (with ``stride``) → pointwise 1x1 → normalisation → ReLU, plus the input when the shapes
    allow (``stride == 1`` and ``in_channels == out_channels``).

    ``forward``: ``(B, in_channels, H, W)`` → ``(B, out_channels, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = NORMS[norm](out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm(self.pointwise(self.depthwise(x))))
        return x + y if self.residual else y


class MobileUNet(nn.Module):
    """Stem (3x3 convolution, stride 2) → encoder levels of two separable blocks (the first with stride 2) →
    decoder of one separable block per level on the upsampled features concatenated with the skip → 1x1
    head at 1/2 resolution → bilinear upsampling to the input size.

    Args:
        in_channels: input channels ``C_in`` (``2 * context + 1`` for 2.5D input).
        out_channels: 1 (sigmoid) or 2 (softmax) logits.
        channels: channels of the stem and of each encoder level, top first; ``len(channels) - 1``
            down-samplings follow the stem.
        norm: ``"batch"`` or ``"instance"``.

    ``forward``: ``(B, C_in, H, W)`` → logits ``(B, out_channels, H, W)``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, channels: Sequence[int] = (16, 32, 64, 128, 256), norm: str = "batch"
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"mobile U-Net norm must be one of {sorted(NORMS)}, got '{norm}'")
        if len(channels) < 2:
            raise ValueError(f"mobile U-Net needs at least two levels of channels, got {tuple(channels)}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, 2, 1, bias=False), NORMS[norm](channels[0]), nn.ReLU()
        )
        self.down = nn.ModuleList(
            nn.Sequential(SeparableBlock(c_in, c_out, 2, norm), SeparableBlock(c_out, c_out, 1, norm))
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.up = nn.ModuleList(
            SeparableBlock(c_deep + c_skip, c_skip, 1, norm)
            for c_skip, c_deep in reversed(list(zip(channels[:-1], channels[1:])))
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for level in self.down:
            skips.append(level(skips[-1]))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear"), skip], dim=1))
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear")


MOBILE_TAPS = ("stem", "down.0", "down.1", "down.2")


@register_model(
    "mobile-unet",
    description="CPU-fast student: depthwise-separable U-Net, stride-2 stem, 16-256 channels, batch norm (0.21 M)",
    default_taps=MOBILE_TAPS,
    channels=(16, 32, 64, 128, 256),
    norm="batch",
)
def mobile_unet(in_channels: int, out_channels: int, *, channels: Sequence[int], norm: str) -> nn.Module:
    """A :class:`MobileUNet`; ``channels`` per level, stem first."""
    return MobileUNet(in_channels, out_channels, tuple(channels), norm)
