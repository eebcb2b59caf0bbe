"""Post-processing of predicted probability volumes into binary masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from prokd.config import PostprocessConfig


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 3D connected component (26-connectivity) of a binary ``(Z, Y, X)`` mask."""
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask.astype(np.uint8)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return (labelled == sizes.argmax()).astype(np.uint8)


def probability_to_mask(probability: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Threshold a foreground probability ``(Z, Y, X)`` and optionally keep its largest component."""
    mask = (probability >= config.threshold).astype(np.uint8)
    return largest_component(mask) if config.largest_component else mask
