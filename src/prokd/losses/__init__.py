"""Segmentation losses (Dice, Lovász, cross-entropy) and knowledge-distillation terms.

Distillation: :mod:`~prokd.losses.kd_kl` for the outputs; feature terms by name from
:mod:`~prokd.losses.kd_registry`, filled by importing the term modules ``kd_hint``, ``kd_attention`` and
``kd_affinity`` here.
"""

from prokd.losses.kd_affinity import AffinityLoss, affinity_matrix
from prokd.losses.kd_attention import AttentionTransferLoss, attention_map
from prokd.losses.kd_hint import HintLoss
from prokd.losses.kd_kl import (
    bernoulli_kl,
    boundary_weights,
    foreground_logit,
    kl_distillation,
    soft_foreground,
    uncertainty_weights,
)
from prokd.losses.kd_registry import (
    FeatureTerm,
    build_feature_term,
    feature_terms,
    pair_features,
    register_feature_term,
)
from prokd.losses.lovasz import lovasz_hinge, lovasz_softmax
from prokd.losses.segmentation import SegmentationLoss, probabilities

__all__ = [
    "AffinityLoss",
    "AttentionTransferLoss",
    "FeatureTerm",
    "HintLoss",
    "SegmentationLoss",
    "affinity_matrix",
    "attention_map",
    "bernoulli_kl",
    "boundary_weights",
    "build_feature_term",
    "feature_terms",
    "foreground_logit",
    "kl_distillation",
    "lovasz_hinge",
    "lovasz_softmax",
    "pair_features",
    "probabilities",
    "register_feature_term",
    "soft_foreground",
    "uncertainty_weights",
]
