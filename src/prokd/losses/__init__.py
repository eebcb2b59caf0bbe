"""Segmentation losses (Dice, Lovász) and, later, knowledge-distillation terms."""
