"""2D (or 2.5D) slice batches drawn from volumes on the canonical grid, with foreground-aware sampling.

Volumes are held in memory already preprocessed (normalised, resampled to ``(Z, S, S)``); a :class:`Batch`
holds ``x`` ``(B, 2 * context + 1, S, S)`` float32, ``y`` ``(B, 1, S, S)`` float32 in {0, 1} and
``labeled`` ``(B,)`` bool (slices of unlabeled images, used by distillation, have ``y == 0``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from monai.transforms import Compose

from prokd.data.datalist import LoadedCase
from prokd.data.preprocess import GridPlan, Preprocessor


@dataclass
class Batch:
    """Training slices: ``x`` ``(B, C, S, S)``, ``y`` ``(B, 1, S, S)``, ``labeled`` ``(B,)`` bool,
    ``keys``: the ``(case_id, slice index)`` each sample was drawn from, ``teacher`` ``(B, K, S, S)``: the
    teachers' cached logits, augmented with the slice (None unless the sampler has ``teacher_maps``), and
    ``sites``: each sample's site (empty when unknown)."""

    x: torch.Tensor
    y: torch.Tensor
    labeled: torch.Tensor
    keys: tuple[tuple[str, int], ...] = ()
    teacher: torch.Tensor | None = None
    sites: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.x)

    def take(self, part: slice) -> Batch:
        """The samples at ``part`` (one process's share of a data-parallel batch)."""
        return Batch(
            self.x[part],
            self.y[part],
            self.labeled[part],
            self.keys[part],
            None if self.teacher is None else self.teacher[part],
            self.sites[part],
        )

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on ``device``."""
        return replace(
            self,
            x=self.x.to(device),
            y=self.y.to(device),
            labeled=self.labeled.to(device),
            teacher=None if self.teacher is None else self.teacher.to(device),
        )


@dataclass
class GridCase:
    """One case on the canonical grid: ``image`` ``(Z, S, S)`` float32, ``label`` ``(Z, S, S)`` uint8 or None."""

    case_id: str
    site: str
    image: np.ndarray
    label: np.ndarray | None
    plan: GridPlan

    @property
    def foreground_slices(self) -> np.ndarray:
        """Indices of slices whose label has any foreground (empty for unlabeled cases)."""
        if self.label is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.label.reshape(len(self.label), -1).any(axis=1))


def to_grid_case(loaded: LoadedCase, preprocessor: Preprocessor) -> GridCase:
    """Normalise and resample a loaded case onto the preprocessor's grid."""
    plan = preprocessor.plan(loaded.image.shape, loaded.geometry.spacing)
    label = None if loaded.label is None else preprocessor.label_to_grid(loaded.label, plan)
    return GridCase(
        case_id=loaded.case.case_id,
        site=loaded.case.site,
        image=preprocessor.image_to_grid(loaded.image, plan),
        label=label,
        plan=plan,
    )


def context_stack(image: np.ndarray, index: int, context: int) -> np.ndarray:
    """Slice ``index`` of ``image`` ``(Z, H, W)`` with ``context`` neighbours on each side as channels.

    Returns ``(2 * context + 1, H, W)``; slices beyond the volume's ends repeat the end slice.
    """
    return image[_neighbours(np.asarray(index), context, len(image))]


def volume_inputs(image: np.ndarray, context: int) -> np.ndarray:
    """Every slice of ``image`` ``(Z, H, W)`` as network input: ``(Z, 2 * context + 1, H, W)``, gathered in one
    indexing operation (the same stacks as :func:`context_stack` for each slice)."""
    return image[_neighbours(np.arange(len(image)), context, len(image))]


def _neighbours(indices: np.ndarray, context: int, depth: int) -> np.ndarray:
    """Slice indices ``indices[..., None] + (-context ... context)``, clamped to the volume's ``depth`` slices."""
    return np.clip(indices[..., None] + np.arange(-context, context + 1), 0, depth - 1)


class SliceSampler:
    """Draws random training batches of slices.

    Each sample comes with probability ``unlabeled_fraction`` from an unlabeled image (any slice), otherwise
    from a labeled case chosen uniformly: with probability ``foreground_fraction`` a slice that contains
    foreground, otherwise any slice of that case. Each sample is then augmented independently. With
    ``unlabeled_fraction`` 1 (a run without labels) every sample is unlabeled and ``cases`` may be empty.

    Args:
        cases: labeled cases on the canonical grid.
        batch_size: slices per batch.
        context: neighbouring slices on each side stacked as channels.
        foreground_fraction: probability of drawing a slice with foreground.
        augmentation: MONAI transform applied to ``{"image": (C, S, S), "label": (1, S, S)}``, or None.
        unlabeled: cases without labels (images only), for distillation.
        unlabeled_fraction: probability that a sample is drawn from ``unlabeled``.
        teacher_maps: ``(case, slice index) -> (K, S, S)`` teacher logits of the un-augmented slice; they are
            augmented with the slice (spatial transforms only) and returned as ``Batch.teacher``.
    """

    def __init__(
        self,
        cases: list[GridCase],
        batch_size: int,
        context: int = 0,
        foreground_fraction: float = 0.7,
        augmentation: Compose | None = None,
        unlabeled: list[GridCase] | None = None,
        unlabeled_fraction: float = 0.0,
        teacher_maps: Callable[[GridCase, int], np.ndarray] | None = None,
    ) -> None:
        missing_labels = [c.case_id for c in cases if c.label is None]
        if missing_labels:
            raise ValueError(f"SliceSampler: cases {missing_labels} have no label (pass them as unlabeled)")
        if not cases and unlabeled_fraction < 1:
            raise ValueError("SliceSampler needs labeled cases unless every sample is unlabeled "
                             "(unlabeled_fraction 1)")
        if unlabeled_fraction > 0 and not unlabeled:
            raise ValueError("SliceSampler: unlabeled_fraction > 0 needs unlabeled cases")
        self.cases = cases
        self.batch_size = batch_size
        self.context = context
        self.foreground_fraction = foreground_fraction
        self.augmentation = augmentation
        self._foreground = [c.foreground_slices for c in cases]
        self.unlabeled = unlabeled or []
        self.unlabeled_fraction = unlabeled_fraction
        self.teacher_maps = teacher_maps
        self._sites = {case.case_id: case.site for case in [*cases, *self.unlabeled]}

    def seed(self, seed: int) -> np.random.Generator:
        """Reseed the augmentation with ``seed`` and return the sampling generator for the same seed."""
        if self.augmentation is not None:
            self.augmentation.set_random_state(seed=seed % (2**32))
        return np.random.default_rng(seed)

    def batch(self, rng: np.random.Generator) -> Batch:
        """Draw one batch of ``batch_size`` slices."""
        samples = [self._sample(rng) for _ in range(self.batch_size)]
        images, labels, labeled, keys, teacher = zip(*samples)
        return Batch(
            torch.stack(images),
            torch.stack(labels),
            torch.tensor(labeled, dtype=torch.bool),
            keys,
            None if self.teacher_maps is None else torch.stack(teacher),
            tuple(self._sites[key[0]] for key in keys),
        )

    def _sample(
        self, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, bool, tuple[str, int], torch.Tensor | None]:
        if self.unlabeled_fraction > 0 and rng.random() < self.unlabeled_fraction:
            case = self.unlabeled[int(rng.integers(len(self.unlabeled)))]
            z = int(rng.integers(len(case.image)))
            label = np.zeros((1, *case.image.shape[1:]), dtype=np.float32)
        else:
            index = int(rng.integers(len(self.cases)))
            case, foreground = self.cases[index], self._foreground[index]
            if len(foreground) and rng.random() < self.foreground_fraction:
                z = int(rng.choice(foreground))
            else:
                z = int(rng.integers(len(case.image)))
            label = case.label[z][None].astype(np.float32)
        item = {"image": context_stack(case.image, z, self.context).astype(np.float32), "label": label}
        if self.teacher_maps is not None:
            item["teacher"] = self.teacher_maps(case, z)
        if self.augmentation is not None:
            item = self.augmentation(item)
        tensors = {key: torch.as_tensor(np.asarray(value), dtype=torch.float32) for key, value in item.items()}
        return tensors["image"], tensors["label"], case.label is not None, (case.case_id, z), tensors.get("teacher")
