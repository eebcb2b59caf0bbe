"""Segmentation losses (Dice, Lovász) and, later, knowledge-distillation terms."""

from prokd.losses.lovasz import lovasz_hinge, lovasz_softmax
from prokd.losses.segmentation import SegmentationLoss, probabilities

__all__ = ["SegmentationLoss", "lovasz_hinge", "lovasz_softmax", "probabilities"]
