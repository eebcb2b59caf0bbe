"""Residual U-Nets (MONAI :class:`~monai.networks.nets.UNet`): the default teacher and students.

The U-Net of Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015, with the residual units of Kerfoot et al., "Left-Ventricle Quantification Using Residual
U-Net", STACOM 2018 (MONAI's implementation). Every level halves the resolution with a strided
convolution, so with strides ``(2, 2, 2, 2)`` the encoder outputs are at 1/2, 1/4, 1/8 and 1/16 of the
input and the bottleneck stays at 1/16.

Normalisation is instance norm with learnt affine parameters, as in nnU-Net (Isensee et al., Nature
Methods 2021): batches of 2D slices are small and strongly correlated (few volumes per batch), which makes
batch statistics noisy and their running averages site-dependent, whereas instance norm behaves the same in
training and evaluation and absorbs the arbitrary intensity scale of MRI per slice.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import UNet
from torch import nn

from prokd.models.registry import register_model

__all__ = ["INSTANCE_NORM", "nested_block_name", "unet"]

INSTANCE_NORM = ("instance", {"affine": True})


def nested_block_name(level: int, *, innermost: bool = False) -> str:
    """Module name of a block in MONAI's recursive U-Net layout (``UNet`` and ``AttentionUnet``).

    Both nets are ``model = Sequential(head, layer, out)`` where each ``layer`` wraps
    ``submodule = Sequential(down_block, next_layer, ...)``; the innermost ``layer`` wraps the bottleneck
    block itself.

    Args:
        level: nesting depth; ``0`` is the head, ``k`` is the down block ``k`` layers deep.
        innermost: name the bottleneck ``level`` layers deep instead of a down block.
    """
    path = "model" + ".1.submodule" * level
    return path if innermost else f"{path}.0"


UNET_TAPS = (
    nested_block_name(0),
    nested_block_name(1),
    nested_block_name(2),
    nested_block_name(4, innermost=True),
)


@register_model(
    "unet-large",
    description="teacher: residual U-Net, 32-512 channels, 2 residual units per block (6.5 M)",
    default_taps=UNET_TAPS,
    channels=(32, 64, 128, 256, 512),
    strides=(2, 2, 2, 2),
    num_res_units=2,
    norm=INSTANCE_NORM,
    dropout=0.0,
)
@register_model(
    "unet-small",
    description="default student: residual U-Net, 8-128 channels, 2 residual units per block (0.41 M)",
    default_taps=UNET_TAPS,
    channels=(8, 16, 32, 64, 128),
    strides=(2, 2, 2, 2),
    num_res_units=2,
    norm=INSTANCE_NORM,
    dropout=0.0,
)
@register_model(
    "unet-tiny",
    description="tiny student: residual U-Net, 8-128 channels, 1 residual unit per block (0.21 M)",
    default_taps=UNET_TAPS,
    channels=(8, 16, 32, 64, 128),
    strides=(2, 2, 2, 2),
    num_res_units=1,
    norm=INSTANCE_NORM,
    dropout=0.0,
)
def unet(
    in_channels: int,
    out_channels: int,
    *,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    norm: str | tuple,
    dropout: float,
) -> nn.Module:
    """A 2D MONAI ``UNet``; ``channels`` per level, top first, with ``len(strides) == len(channels) - 1``."""
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
