"""Weak-to-strong consistency on unlabeled slices, FixMatch style.

Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020;
for segmentation, Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic Segmentation"
(UniMatch), CVPR 2023.

The weak view of an unlabeled slice is the slice as the sampler augmented it, the student's own input; its
strong view is the weak one under photometric changes only (:mod:`prokd.data.photometric`), so the two are
pixel-aligned. A target foreground probability ``p`` on the weak view (by default the student's own, detached;
or the aggregated teachers', ``distill.consistency_target``) supervises the student's ``q`` on the strong view
where it is confident, ``p > τ`` or ``p < 1 - τ``, and the strong view kept the pixel (not cut out):

    consistency = Σ_confident KL(p ‖ q) / #confident pixels

over the unlabeled slices of the batch, with the per-pixel Bernoulli KL at temperature 1
(:func:`~prokd.losses.kd_kl.bernoulli_kl`). The KL has the gradient of the binary cross-entropy against the soft
target ``p`` but is 0 where the two views agree, so the logged term reads as the remaining disagreement.
FixMatch's hard label (``p > 0.5``) would instead keep sharpening pixels that are already confident.

In a data-parallel run the sums are taken over the global batch: each process forwards the strong views of its
own unlabeled slices, the per-slice sums (with their gradients) and counts are gathered (:meth:`World.concat`),
and the perturbations are drawn for every unlabeled slice of the global batch, so the term and its gradient are
those of a single process.
"""

from __future__ import annotations

import torch
from torch import nn

from prokd.config import DistillConfig
from prokd.data.photometric import PhotometricPerturbation
from prokd.distributed import World
from prokd.losses import bernoulli_kl

__all__ = ["ConsistencyLoss", "confident_pixels"]


def confident_pixels(target: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, H, W) bool: where the target foreground probability ``target`` (B, 1, H, W) is above ``threshold``
    or below ``1 - threshold``."""
    return (target > threshold) | (target < 1 - threshold)


class ConsistencyLoss(nn.Module):
    """``(model, x, target, unlabeled) -> (loss, confident share)``, or None when no unlabeled slice is in the
    (global) batch; see the module docstring.

    Args:
        threshold: confidence threshold ``τ`` in [0.5, 1).
        perturbation: makes the strong views (default: :class:`~prokd.data.photometric.PhotometricPerturbation`
            with its default strengths).
        world: the processes of a data-parallel run; sums are taken over all their slices.
    """

    def __init__(
        self, threshold: float = 0.9, perturbation: PhotometricPerturbation | None = None, world: World = World()
    ) -> None:
        super().__init__()
        if not 0.5 <= threshold < 1:
            raise ValueError(f"ConsistencyLoss: threshold must be in [0.5, 1), got {threshold}")
        self.threshold = threshold
        self.perturbation = perturbation or PhotometricPerturbation()
        self.world = world

    @classmethod
    def from_config(cls, config: DistillConfig, world: World = World()) -> ConsistencyLoss:
        """The term of ``distill.consistency_threshold``, with the default perturbation."""
        return cls(threshold=config.consistency_threshold, world=world)

    def forward(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, unlabeled: torch.Tensor
    ) -> tuple[torch.Tensor, float] | None:
        """The consistency of ``model`` on the unlabeled slices.

        Args:
            model: the student, ``(U, C, H, W) -> (U, 1 or 2, H, W)`` logits.
            x: (B, C, H, W) the weak views (the student's input).
            target: (B, 1, H, W) foreground probabilities on the weak views, treated as constants.
            unlabeled: (B,) bool, the slices the term applies to.

        Returns:
            the scalar loss and the share of the unlabeled slices' pixels that are confident and kept, or None
            when no process has an unlabeled slice (nothing is computed then).
        """
        everywhere = self.world.concat(unlabeled)
        if not everywhere.any():
            return None
        drawn = self.perturbation.draw(int(everywhere.sum()), tuple(x.shape[1:]), None, x.device, x.dtype)
        # per slice: the divergences' sum (in the graph on every process, which all join its gathering's backward)
        # and the number of confident pixels
        sums, counts = x.new_zeros(len(x)).requires_grad_(), x.new_zeros(len(x))
        if unlabeled.any():
            first = int(everywhere[: self.world.shard(len(everywhere)).start].sum())
            mine = drawn.take(slice(first, first + int(unlabeled.sum())))
            strong, kept = self.perturbation.apply(x[unlabeled], mine)
            mask = (confident_pixels(target[unlabeled], self.threshold) & kept).to(x.dtype)
            divergence = bernoulli_kl(model(strong), target[unlabeled], 1.0)
            sums = sums.index_put((unlabeled,), (mask * divergence).flatten(1).sum(dim=1))
            counts[unlabeled] = mask.flatten(1).sum(dim=1)
        sums, counts = self.world.concat(sums), self.world.concat(counts).sum()
        share = counts.item() / (everywhere.sum().item() * x.shape[-2] * x.shape[-1])
        return sums.sum() / counts.clamp_min(1), share
