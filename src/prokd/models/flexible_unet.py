"""EfficientNet-encoder U-Net (MONAI :class:`~monai.networks.nets.FlexibleUNet`): an ImageNet-style teacher.

An EfficientNet encoder (Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019; mobile inverted bottlenecks with squeeze-and-excitation) under a U-Net decoder, always
randomly initialised: ``pretrained`` is fixed to ``False`` so nothing is downloaded, and MONAI builds the
encoder from its own code, without torchvision.

The encoder's seven stages ``encoder._blocks.0`` ... ``encoder._blocks.6`` are at 1/2, 1/4, 1/8, 1/16, 1/16,
1/32 and 1/32 of the input for every EfficientNet variant; the default taps are stages 0, 1, 2 and 4, at 1/2
to 1/16 like the U-Nets' taps. Inputs whose side is a multiple of 16 but not of 32 work because the decoder
pads. Normalisation is batch norm throughout (MONAI's EfficientNet fixes it in the encoder), and the encoder
applies its built-in stochastic depth (drop-connect rate 0.2) in training; ``dropout`` acts in the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import FlexibleUNet
from torch import nn

from prokd.models.registry import register_model

__all__ = ["flexible_unet"]


@register_model(
    "flexunet-b0",
    description="teacher: EfficientNet-B0 encoder + U-Net decoder, random init (7.1 M)",
    default_taps=("encoder._blocks.0", "encoder._blocks.1", "encoder._blocks.2", "encoder._blocks.4"),
    backbone="efficientnet-b0",
    decoder_channels=(256, 128, 64, 32, 16),
    norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
    dropout=0.0,
)
def flexible_unet(
    in_channels: int,
    out_channels: int,
    *,
    backbone: str,
    decoder_channels: Sequence[int],
    norm: str | tuple,
    dropout: float,
) -> nn.Module:
    """A 2D MONAI ``FlexibleUNet`` with an EfficientNet ``backbone`` (``"efficientnet-b0"`` ... ``"-b8"``).

    Raises:
        ValueError: ``backbone`` is not an EfficientNet (other encoders need inputs that are multiples of 32
            and have other stage names).
    """
    if not backbone.startswith("efficientnet-b"):
        raise ValueError(f"flexible U-Net backbone must be an efficientnet-b* encoder, got '{backbone}'")
    return FlexibleUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        backbone=backbone,
        pretrained=False,
        decoder_channels=tuple(decoder_channels),
        spatial_dims=2,
        norm=norm,
        dropout=dropout,
    )
