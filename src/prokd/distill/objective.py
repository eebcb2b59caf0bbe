"""The distillation objective: segmentation loss on labeled slices + KL to the aggregated teachers + feature
distillation (+ pseudo-label and consistency terms on unlabeled slices), for one or several frozen teachers.

    loss = seg(student, y)                              on labeled slices (Dice + Lovász + CE)
         + kl      · T² · KL(aggregate_T(teachers) ‖ student_T)   on every slice (optionally restricted)
         + feature · Σ_k w_k · feature_term_k(student taps, teacher k taps)
         + pseudo  · seg(student, aggregate_1(teachers) > 0.5)   on unlabeled slices (with foreground only,
                                                                  ``pseudo_foreground_only``; with
                                                                  ``pseudo_joint`` inside the first seg term)
         + consistency · KL(target on the slice ‖ student on its strong view)   on unlabeled slices, confident
                                                                  pixels (:mod:`prokd.distill.consistency`)
         + gate    · gate_loss                          (``learned`` aggregation only)

where ``aggregate_T`` combines the teachers' temperature-softened foreground probabilities with the
configured :mod:`prokd.distill.aggregate` mode (``aggregate_1``: the same weights on the probabilities at
T = 1) and ``w_k`` is teacher k's mean aggregation weight on the
batch, so feature distillation, too, listens most to the teacher trusted on these images. Each teacher has
its own feature term (and so its own adapters). The method follows "Knowledge distillation for adaptive MRI
prostate segmentation based on limit-trained multi-teacher models" (arXiv 2303.09494): feature-based
distillation + Kullback-Leibler divergence + Lovász + Dice.

Teachers are kept in a plain list: they are not submodules, so they stay frozen in eval mode and are left
out of the objective's ``state_dict`` (which holds the adapters and the aggregator).

With ``cache_teachers`` the teachers' logits of each slice are computed once, on the un-augmented slice
(:meth:`DistillationObjective.teacher_logits`, the sampler's ``teacher_maps``), and travel with the slice
through the spatial augmentation (``Batch.teacher``): the teacher forward pass, which dominates a KD step on a
CPU, then runs once per slice instead of once per step, and once per teacher and case across students, as
the logits are kept beside each teacher's checkpoint (:mod:`prokd.distill.logit_cache`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prokd.config import DistillConfig, PreprocessConfig
from prokd.data.slices import Batch, GridCase
from prokd.distill.aggregate import AggregateResult, build_aggregator_for
from prokd.distill.consistency import ConsistencyLoss
from prokd.distill.gate import LearnedAggregator, gate_loss
from prokd.distill.logit_cache import TeacherLogitCache
from prokd.distill.teachers import Teacher, centre_channels, check_compatible
from prokd.distributed import World
from prokd.losses import (
    SegmentationLoss,
    boundary_weights,
    build_feature_term,
    kl_distillation,
    pair_features,
    soft_foreground,
    uncertainty_weights,
)
from prokd.models import FeatureTaps, tap_channels


class DistillationObjective(nn.Module):
    """``(student, batch) -> (loss, terms)`` for distillation from ``teachers``.

    Args:
        student: the network being trained (used once here to measure its feature taps).
        student_taps: module names of the student's feature taps.
        student_preprocess: the student's preprocessing; teachers must be compatible with it.
        teachers: frozen teachers (at least one).
        seg_loss: the supervised loss applied to labeled slices.
        config: term weights, temperature, aggregation and feature-term settings.
        world: the processes of a data-parallel run; the segmentation loss and the consistency term are taken
            over all their slices.
    """

    def __init__(
        self,
        student: nn.Module,
        student_taps: tuple[str, ...],
        student_preprocess: PreprocessConfig,
        teachers: list[Teacher],
        seg_loss: SegmentationLoss,
        config: DistillConfig,
        world: World = World(),
    ) -> None:
        super().__init__()
        if not teachers:
            raise ValueError("distillation needs at least one teacher")
        for teacher in teachers:
            check_compatible(student_preprocess, teacher)
        self._teachers = list(teachers)
        self.config = config
        self.seg_loss = seg_loss
        self.world = world
        self.student_channels = student_preprocess.in_channels
        self.context = max(student_preprocess.context, *(t.preprocess.context for t in teachers))
        self.aggregator = build_aggregator_for(
            config.aggregate, self._teachers, student_preprocess.in_channels, **config.aggregate_kwargs
        )
        self.student_taps = tuple(config.student_taps or student_taps)
        self._logit_cache = TeacherLogitCache(self._teachers, self.context)
        self.pairs: list[list[tuple[int, int]]] = []
        self.feature_terms = nn.ModuleList()
        if config.feature > 0:
            self._build_feature_terms(student, student_preprocess)
        self.consistency_loss = ConsistencyLoss.from_config(config, world) if config.consistency > 0 else None

    @property
    def teachers(self) -> list[Teacher]:
        return self._teachers

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        x_student = centre_channels(batch.x, self.student_channels)
        with FeatureTaps(model, self.student_taps if self.feature_terms else ()) as taps:
            logits = model(x_student)
            student_features = taps.outputs()
        outputs = [self._teacher_outputs(k, batch) for k in range(len(self._teachers))]
        temperature = self.config.temperature
        softened = torch.stack([soft_foreground(t_logits, temperature) for t_logits, _ in outputs])
        sites = batch.sites or None
        result = self.aggregator(softened, label=batch.y, labeled=batch.labeled, image=x_student, sites=sites)
        total, terms = self._segmentation(logits, batch, outputs, result)
        if self.config.kl > 0:
            weight_map = self._kl_weights(outputs, result)
            kl = kl_distillation(logits, result.probs.detach(), temperature, weight_map)
            total = total + self.config.kl * kl
            terms["kl"] = kl.item()
        if isinstance(self.aggregator, LearnedAggregator) and self.config.gate > 0:
            gate = self._gate_loss(result, batch)
            total = total + self.config.gate * gate
            terms["gate"] = gate.item()
        if self.feature_terms:
            feature = self._feature_loss(student_features, [features for _, features in outputs], result)
            total = total + self.config.feature * feature
            terms["feature"] = feature.item()
        if self.consistency_loss is not None:
            target = self._consistency_target(logits, outputs, result)
            found = self.consistency_loss(model, x_student, target, ~batch.labeled)
            if found is not None:
                consistency, confident_share = found
                total = total + self.config.consistency * consistency
                terms["consistency"], terms["consistency_mask"] = consistency.item(), confident_share
        return total, terms

    def _segmentation(
        self, logits: torch.Tensor, batch: Batch, outputs: list[tuple[torch.Tensor, dict]], result: AggregateResult
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The segmentation loss on the labeled slices, and on the pseudo-labeled ones: in the same loss with
        ``pseudo_joint``, else as the separate ``pseudo`` term."""
        labeled, target = batch.labeled, batch.y
        taught = torch.zeros_like(labeled)
        if self.config.pseudo > 0 and not labeled.all():
            pseudo_label = self._plain_aggregate(outputs, result) > 0.5
            taught = self._pseudo_labeled(~labeled, pseudo_label)
            target = torch.where(taught[:, None, None, None], pseudo_label.to(target.dtype), target)
        logits, target, labeled, taught = (self.world.concat(t) for t in (logits, target, labeled, taught))
        if self.config.pseudo_joint:
            labeled, taught = labeled | taught, torch.zeros_like(taught)
        if labeled.any():
            total, terms = self.seg_loss(logits[labeled], target[labeled])
        else:
            total, terms = logits.new_zeros(()), {}
        if taught.any():
            pseudo, _ = self.seg_loss(logits[taught], target[taught])
            total = total + self.config.pseudo * pseudo
            terms["pseudo"] = pseudo.item()
        return total, terms

    def _gate_loss(self, result: AggregateResult, batch: Batch) -> torch.Tensor:
        """The learned gate's loss over the labeled samples of the global batch (every process's share)."""
        concat = self.world.concat
        weights = concat(result.weights.transpose(0, 1)).transpose(0, 1)
        return gate_loss(AggregateResult(concat(result.probs), weights), concat(batch.y), concat(batch.labeled))

    def train(self, mode: bool = True) -> DistillationObjective:
        """Set the trainable parts' mode; the teachers always stay in eval mode."""
        super().train(mode)
        for teacher in self._teachers:
            teacher.model.eval()
        return self

    def _apply(self, fn, recurse: bool = True) -> DistillationObjective:
        """``to(device)`` and the like reach the teachers too (held outside the module tree: not trained, not
        in the state dict)."""
        super()._apply(fn, recurse)
        for teacher in self._teachers:
            teacher.model._apply(fn, recurse)
        return self

    def teacher_logits(self, case: GridCase, z: int) -> np.ndarray:
        """Every teacher's logits for slice ``z`` of ``case`` (un-augmented), stacked as ``(K, S, S)`` channels
        (``K`` = the sum of the teachers' output channels); computed once per case, then served from memory
        or from the teachers' disk cache."""
        return self._logit_cache(case, z)

    def _teacher_outputs(self, k: int, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher ``k``'s logits (and feature maps) for the batch: run on ``batch.x``, or taken from the cached
        and augmented ``batch.teacher``; divided by its calibration temperature."""
        teacher = self._teachers[k]
        if batch.teacher is None:
            logits, features = teacher(batch.x, with_features=bool(self.feature_terms))
        else:
            start = sum(t.out_channels for t in self._teachers[:k])
            logits, features = batch.teacher[:, start : start + teacher.out_channels], {}
        return logits / teacher.temperature, features

    def _kl_weights(self, outputs: list[tuple[torch.Tensor, dict]], result: AggregateResult) -> torch.Tensor | None:
        """The pixels the KL is restricted to, from the aggregated teacher at temperature 1 (None: all)."""
        if self.config.restrict == "none":
            return None
        aggregate = self._plain_aggregate(outputs, result)
        if self.config.restrict == "uncertain":
            return uncertainty_weights(aggregate)
        return boundary_weights(aggregate > 0.5, self.config.boundary_width)

    def _pseudo_labeled(self, unlabeled: torch.Tensor, pseudo_label: torch.Tensor) -> torch.Tensor:
        """The samples the pseudo-label term applies to: ``(B,)`` bool, the unlabeled ones, or with
        ``pseudo_foreground_only`` those whose ``(B, 1, H, W)`` pseudo-label mask has foreground."""
        if not self.config.pseudo_foreground_only:
            return unlabeled
        return unlabeled & pseudo_label.flatten(1).any(dim=1)

    def _consistency_target(
        self, logits: torch.Tensor, outputs: list[tuple[torch.Tensor, dict]], result: AggregateResult
    ) -> torch.Tensor:
        """(B, 1, H, W) the foreground probability the strong views must match: the student's own at T = 1 on
        the slices (``consistency_target: student``) or the aggregated teachers' (``teachers``)."""
        if self.config.consistency_target == "teachers":
            return self._plain_aggregate(outputs, result)
        return soft_foreground(logits, 1.0)

    @staticmethod
    def _plain_aggregate(outputs: list[tuple[torch.Tensor, dict]], result: AggregateResult) -> torch.Tensor:
        """(B, 1, H, W) the teachers' foreground probabilities at T = 1 under the aggregation's weights."""
        plain = torch.stack([soft_foreground(t_logits, 1.0) for t_logits, _ in outputs])
        return (result.weights.detach() * plain).sum(dim=0)

    def _build_feature_terms(self, student: nn.Module, preprocess: PreprocessConfig) -> None:
        size = preprocess.size
        student_shapes = list(tap_channels(student, self.student_taps, (preprocess.in_channels, size, size)).values())
        for teacher in self._teachers:
            theirs = teacher.preprocess
            shapes = tap_channels(teacher.model, teacher.taps, (theirs.in_channels, theirs.size, theirs.size))
            scale = size / theirs.size
            on_student_grid = [(c, round(h * scale), round(w * scale)) for c, h, w in shapes.values()]
            pairs = pair_features(student_shapes, on_student_grid)
            self.pairs.append(pairs)
            self.feature_terms.append(
                build_feature_term(
                    self.config.feature_term,
                    [student_shapes[i][0] for i, _ in pairs],
                    [on_student_grid[j][0] for _, j in pairs],
                    **self.config.feature_kwargs,
                )
            )

    def _feature_loss(
        self,
        student_features: dict[str, torch.Tensor],
        teacher_features: list[dict[str, torch.Tensor]],
        result: AggregateResult,
    ) -> torch.Tensor:
        student_maps = list(student_features.values())
        trust = result.weights.detach().flatten(1).mean(dim=1)
        losses = []
        for k, (term, pairs, features) in enumerate(zip(self.feature_terms, self.pairs, teacher_features)):
            teacher_maps = list(features.values())
            loss = term([student_maps[i] for i, _ in pairs], [teacher_maps[j] for _, j in pairs])
            losses.append(trust[k] * loss)
        return torch.stack(losses).sum()
