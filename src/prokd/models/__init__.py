"""Model registry: 2D binary segmentation networks by name, with named feature taps.

Importing this package registers every architecture family: ``unet`` (``unet-large`` teacher,
``unet-small`` default student, ``unet-tiny``), ``attention_unet``, ``segresnet``, ``basic_unet`` and
``flexible_unet``. A new architecture is one module with a builder decorated by :func:`register_model`,
imported here.
"""

from __future__ import annotations

from prokd.models import attention_unet, basic_unet, flexible_unet, mobile_unet, segresnet, unet
from prokd.models.features import FeatureTaps, forward_with_features, tap_channels, valid_tap_names
from prokd.models.registry import ModelSpec, build_model, get_spec, list_models, register_model

__all__ = [
    "FeatureTaps",
    "ModelSpec",
    "attention_unet",
    "basic_unet",
    "build_model",
    "flexible_unet",
    "forward_with_features",
    "get_spec",
    "list_models",
    "mobile_unet",
    "register_model",
    "segresnet",
    "tap_channels",
    "unet",
    "valid_tap_names",
]
