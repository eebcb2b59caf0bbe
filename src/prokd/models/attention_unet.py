"""Attention U-Net (MONAI :class:`~monai.networks.nets.AttentionUnet`): a teacher that is not a residual U-Net.

Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018
(https://arxiv.org/abs/1804.03999): additive attention gates weight each skip connection by the decoder's
coarser context before concatenation.

MONAI's layout differs from :class:`~monai.networks.nets.UNet` in one way that matters for taps: the head
block runs at full resolution and the down blocks ``k`` layers deep are at 1/2**k, so the default taps
(down blocks 1-3 and the bottleneck) sit at 1/2, 1/4, 1/8 and 1/16 of the input, like the U-Nets' taps.

Width 16-256 keeps the training cost close to ``unet-large`` despite the full-resolution head (2.0 M
parameters; 32-512 would be 7.9 M at about four times the cost). Normalisation is not configurable: MONAI
hard-codes batch norm in the convolution blocks and attention gates, so train with batches of several slices.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import AttentionUnet
from torch import nn

from prokd.models.registry import register_model
from prokd.models.unet import nested_block_name

__all__ = ["attention_unet"]


@register_model(
    "attention-unet",
    description="teacher: attention U-Net, 16-256 channels, attention-gated skips (2.0 M)",
    default_taps=(
        nested_block_name(1),
        nested_block_name(2),
        nested_block_name(3),
        nested_block_name(4, innermost=True),
    ),
    channels=(16, 32, 64, 128, 256),
    strides=(2, 2, 2, 2),
    dropout=0.0,
)
def attention_unet(
    in_channels: int, out_channels: int, *, channels: Sequence[int], strides: Sequence[int], dropout: float
) -> nn.Module:
    """A 2D MONAI ``AttentionUnet``; ``channels`` per level, top first, ``len(strides) == len(channels) - 1``."""
    return AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=strides,
        dropout=dropout,
    )
