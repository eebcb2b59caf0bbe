"""Plain U-Net (MONAI :class:`~monai.networks.nets.BasicUNet`): a small student without residual units.

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015, in the
form of Falk et al., Nature Methods 2019 as implemented by MONAI: two 3x3 convolutions per level, max-pool
down-sampling and transposed-convolution up-sampling. The down blocks ``down_1`` ... ``down_4`` (the last is
the bottleneck) are the default taps, at 1/2, 1/4, 1/8 and 1/16 of the input.

At 8-128 channels it has about as many parameters as ``unet-small`` (0.49 M) but convolves at full
resolution in its first and last level, so it costs more per slice; it is the student to compare when the
question is "residual units or not". Normalisation is instance norm with affine parameters, for the reasons
given in :mod:`prokd.models.unet`.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import BasicUNet
from torch import nn

from prokd.models.registry import register_model
from prokd.models.unet import INSTANCE_NORM

__all__ = ["basic_unet"]


@register_model(
    "basicunet-small",
    description="student: plain U-Net, two convolutions per level, 8-128 channels (0.49 M)",
    default_taps=("down_1", "down_2", "down_3", "down_4"),
    features=(8, 16, 32, 64, 128, 8),
    norm=INSTANCE_NORM,
    dropout=0.0,
)
def basic_unet(
    in_channels: int, out_channels: int, *, features: Sequence[int], norm: str | tuple, dropout: float
) -> nn.Module:
    """A 2D MONAI ``BasicUNet``; ``features`` are the five encoder widths, top first, then the top decoder width."""
    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=features,
        norm=norm,
        dropout=dropout,
    )
