"""SegResNet (MONAI :class:`~monai.networks.nets.SegResNet`): an asymmetric residual encoder-decoder.

Myronenko, "3D MRI Brain Tumor Segmentation Using Autoencoder Regularization", BrainLes 2018
(https://arxiv.org/abs/1810.11654), without the VAE branch, in 2D: a deep encoder of pre-activation
residual blocks (``blocks_down`` per level, each level after the first halving the resolution with a
strided convolution) and a light decoder of one block per level with linear upsampling and additive skips.

With ``blocks_down=(1, 2, 2, 4)`` there are three down-samplings, so the default taps (the outputs of
encoder levels 1-3; level 3 is the bottleneck) sit at 1/2, 1/4 and 1/8 of the input.

Normalisation is group norm with 8 groups (Wu and He, "Group Normalization", ECCV 2018), the paper's
choice: like instance norm it does not depend on the batch, which suits small batches of 2D slices.
``dropout`` is applied once, after the initial convolution, as in MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import SegResNet
from torch import nn

from prokd.models.registry import register_model

__all__ = ["segresnet"]


@register_model(
    "segresnet",
    description="non-U-Net: SegResNet, 16-128 channels, deep residual encoder, light decoder (1.6 M)",
    default_taps=("down_layers.1", "down_layers.2", "down_layers.3"),
    init_filters=16,
    blocks_down=(1, 2, 2, 4),
    blocks_up=(1, 1, 1),
    norm=("group", {"num_groups": 8}),
    dropout=0.0,
)
def segresnet(
    in_channels: int,
    out_channels: int,
    *,
    init_filters: int,
    blocks_down: Sequence[int],
    blocks_up: Sequence[int],
    norm: str | tuple,
    dropout: float,
) -> nn.Module:
    """A 2D MONAI ``SegResNet``; encoder level ``i`` has ``init_filters * 2**i`` channels and ``blocks_down[i]``
    residual blocks, with ``len(blocks_up) == len(blocks_down) - 1``."""
    return SegResNet(
        spatial_dims=2,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=dropout,
        norm=norm,
        blocks_down=tuple(blocks_down),
        blocks_up=tuple(blocks_up),
    )
