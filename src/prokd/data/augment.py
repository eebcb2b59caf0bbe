"""Random 2D augmentation of training slices, built from MONAI dictionary transforms.

Sites differ in field of view and apparent gland size by up to 2x, so a wide isotropic zoom is the most
important transform here; the intensity transforms imitate scanner differences (gain, offset, coil bias
field, noise, contrast).

Inputs are dictionaries with ``"image"`` ``(C, H, W)`` float32 (normalised intensities; C = 2.5D context
channels), ``"label"`` ``(1, H, W)`` and optionally ``"teacher"`` ``(K, H, W)``, cached teacher logits of the
un-augmented slice (distillation with ``distill.cache_teachers``). Spatial transforms move all three (the
label with nearest-neighbour, the others bilinearly); intensity transforms touch the image only, so a
cached teacher keeps its view of the clean slice.

The transforms run with MONAI's meta-data tracking switched off (:class:`UntrackedCompose`): slices need no
affine history, and building ``MetaTensor`` objects was most of the cost (an exploratory timing, not a benchmark:
5.1 vs 1.8 ms per 80² slice on one thread), about a third of a ``unet-small`` training step. The outputs are
identical (``tests/data/test_augment.py``).
"""

from __future__ import annotations

import math
from typing import Any

from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
)

from prokd.config import AugmentConfig

KEYS = ("image", "label", "teacher")
SPATIAL_MODES = ("bilinear", "nearest", "bilinear")
ZOOM_FILLS = {"edge": "edge", "dark": ("minimum", "constant", "minimum")}
"""How a zoomed-out slice is filled, per key of :data:`KEYS`: ``edge`` repeats the border; ``dark`` puts the
image in empty space, as a wider field of view does (each row and column padded with its darkest value, the
label with background, cached teacher logits with their most negative value). With ``edge`` a network never
sees the body's outline against empty space, and on a 2x wider field of view it segments the whole body. An
exploratory run, not a benchmark (PROMISE12, ``mobile-unet`` from scratch, 1500 steps, seed 0, fixed split):
``dark`` with ``zoom_range`` (0.45, 1.5) against ``edge`` with (0.6, 1.5) raised the 3D Dice on the test cases
padded to 2x their field of view from 0.488 to 0.669 (validation 0.234 to 0.629), left the original test cases
at 0.840 (0.845) and cost 2.4 points on the 4 validation cases (0.851 vs 0.875). For the full teacher
(``unet-large``, 2500 steps, same seed and split): 2x field of view 0.397 to 0.771, 1.5x 0.788 to 0.819,
original 0.876 to 0.875, validation 0.877 to 0.864. ``edge`` stays the default until seeds and a validation
choice settle it."""


class UntrackedCompose(Compose):
    """A :class:`~monai.transforms.Compose` that runs with MONAI's meta-data tracking off and restores it after,
    so it returns plain tensors and leaves the rest of the process as it was."""

    def __call__(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        tracked = get_track_meta()
        set_track_meta(False)
        try:
            return super().__call__(data, *args, **kwargs)
        finally:
            set_track_meta(tracked)


def build_augmentation(config: AugmentConfig, size: int) -> UntrackedCompose | None:
    """Compose the training augmentation described by ``config`` for ``size x size`` slices; ``None`` when
    disabled.

    Seed it with ``Compose.set_random_state(seed)`` so that a run (and its resume) is reproducible.
    """
    if not config.enabled:
        return None
    spatial = [
        RandFlipd(KEYS, prob=config.flip_prob, spatial_axis=1, allow_missing_keys=True),
        RandZoomd(
            KEYS,
            prob=config.affine_prob,
            min_zoom=config.zoom_range[0],
            max_zoom=config.zoom_range[1],
            mode=SPATIAL_MODES,
            padding_mode=ZOOM_FILLS[config.zoom_fill],
            keep_size=True,
            allow_missing_keys=True,
        ),
        RandAffined(
            KEYS,
            prob=config.affine_prob,
            rotate_range=math.radians(config.rotate_degrees),
            translate_range=config.translate_fraction * size,
            mode=SPATIAL_MODES,
            padding_mode="border",
            allow_missing_keys=True,
        ),
    ]
    return UntrackedCompose(spatial + intensity_transforms(config))


def intensity_transforms(config: AugmentConfig) -> list[Any]:
    """The intensity transforms of ``config`` (the image only): scale and shift, bias field, gamma, noise, their
    reach multiplied by ``config.intensity_strength`` (gamma in log space, so it stays positive)."""
    k = config.intensity_strength
    return [
        RandScaleIntensityd("image", factors=0.2 * k, prob=config.intensity_prob),
        RandShiftIntensityd("image", offsets=0.2 * k, prob=config.intensity_prob),
        RandBiasFieldd("image", coeff_range=(0.0, 0.3 * k), prob=config.bias_field_prob),
        RandAdjustContrastd("image", gamma=(0.7**k, 1.5**k), prob=config.contrast_prob),
        RandGaussianNoised("image", std=0.1 * k, prob=config.noise_prob),
    ]
