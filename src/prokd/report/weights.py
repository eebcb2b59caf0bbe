"""How a multi-teacher student's aggregator weighs its teachers on the test cases.

The run's distillation objective is rebuilt exactly as it was trained (:class:`DistillationObjective` from
the student's checkpoint and the teacher runs of its ``teachers.json``) and its saved state is loaded
(``checkpoint["extra"]["objective"]``), so a ``learned`` gate comes back with its trained weights. The
aggregator then weighs the teachers' temperature-softened probabilities on every slice of each test case on
the student's grid, without the label, as it would on an unlabeled image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prokd.config import PreprocessConfig, RunConfig
from prokd.data.datalist import LoadedCase
from prokd.data.preprocess import Preprocessor
from prokd.data.slices import volume_inputs
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import Teacher, centre_channels, load_teacher
from prokd.losses import SegmentationLoss, soft_foreground
from prokd.models import get_spec
from prokd.runs.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, resolve_checkpoint
from prokd.runs.folder import read_json

__all__ = ["TeacherWeights", "rebuild_objective", "teacher_weights"]

BATCH = 16
PROSTATE = 0.5  # a pixel counts as candidate prostate where any teacher's probability (T = 1) reaches this


@dataclass
class TeacherWeights:
    """Mean aggregation weight of each teacher on a set of test cases.

    Attributes:
        teachers: the K teacher names.
        aggregate: the aggregation mode.
        all_pixels: (K,) mean weight over every pixel of every slice (the objective's per-teacher trust).
        prostate: (K,) mean weight over the candidate prostate: pixels where any teacher's foreground
            probability is >= 0.5.
        prostate_by_site: ``{site: (K,)}`` the same per site; NaN where no pixel qualifies.
    """

    teachers: list[str]
    aggregate: str
    all_pixels: np.ndarray
    prostate: np.ndarray
    prostate_by_site: dict[str, np.ndarray]


def rebuild_objective(run: Path, teacher_runs: Sequence[Path]) -> tuple[DistillationObjective, PreprocessConfig]:
    """The distillation objective of ``run``'s best checkpoint with its saved state, and its preprocessing."""
    path = resolve_checkpoint(run, "best")
    payload = load_checkpoint(path)
    config = RunConfig.from_dict(payload["config"])
    if config.distill is None:
        raise CheckpointError(f"{path}: not a distillation run (its config has no 'distill' section)")
    objective = DistillationObjective(
        model_from_checkpoint(payload, path),
        get_spec(config.model.name).default_taps,
        config.preprocess,
        with_recorded_site_scores(run, [load_teacher(teacher, config.distill.teacher_taps) for teacher in teacher_runs]),
        SegmentationLoss.from_config(config.loss, config.model.out_channels),
        config.distill,
    )
    try:
        objective.load_state_dict(payload["extra"]["objective"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the saved objective state does not fit its teachers ({err})") from None
    return objective.eval(), config.preprocess


def with_recorded_site_scores(run: Path, teachers: list[Teacher]) -> list[Teacher]:
    """The teachers with the validation Dice and the trust per site the student ``run`` used
    (``RUN/teachers.json``), if any."""
    path = Path(run) / "teachers.json"
    records = read_json(path) if path.is_file() else []
    for teacher, record in zip(teachers, records):
        teacher.site_scores = record.get("site_scores")
        teacher.site_trust = record.get("site_trust")
    return teachers


@torch.no_grad()
def teacher_weights(run: Path, teacher_runs: Sequence[Path], cases: Sequence[LoadedCase]) -> TeacherWeights:
    """Each teacher's mean weight, as ``run``'s aggregator gives it, on ``cases`` (all slices)."""
    objective, preprocess = rebuild_objective(run, teacher_runs)
    preprocessor = Preprocessor(preprocess)
    k = len(objective.teachers)
    total, pixels = np.zeros(k), 0
    region: dict[str, np.ndarray] = {}  # site -> (K + 1,): weight sums, then the pixel count
    for loaded in cases:
        plan = preprocessor.plan(loaded.image.shape, loaded.geometry.spacing)
        inputs = torch.from_numpy(volume_inputs(preprocessor.image_to_grid(loaded.image, plan), objective.context))
        sums = region.setdefault(loaded.case.site, np.zeros(k + 1))
        for start in range(0, len(inputs), BATCH):
            weights, candidate = _batch_weights(objective, inputs[start : start + BATCH], loaded.case.site)
            total += weights.sum(dim=(1, 2, 3, 4)).double().numpy()
            pixels += weights[0].numel()
            sums[:k] += (weights * candidate).sum(dim=(1, 2, 3, 4)).double().numpy()
            sums[k] += float(candidate.sum())
    return TeacherWeights(
        [teacher.name for teacher in objective.teachers],
        objective.config.aggregate,
        total / pixels,
        _mean(np.sum(list(region.values()), axis=0)),
        {site: _mean(sums) for site, sums in sorted(region.items())},
    )


def _batch_weights(
    objective: DistillationObjective, x: torch.Tensor, site: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B, 1, S, S) aggregation weights and the (B, 1, S, S) candidate prostate for the slices ``x`` of a
    case from ``site``."""
    logits = [teacher(x)[0] for teacher in objective.teachers]
    softened = torch.stack([soft_foreground(z, objective.config.temperature) for z in logits])
    plain = torch.stack([soft_foreground(z, 1.0) for z in logits])
    image = centre_channels(x, objective.student_channels)
    result = objective.aggregator(softened, image=image, sites=[site] * len(x))
    return result.weights, (plain.amax(dim=0) >= PROSTATE).to(result.weights.dtype)


def _mean(sums: np.ndarray) -> np.ndarray:
    """(K,) weight sums / pixel count (the last entry); NaN when there are no pixels."""
    count = sums[-1]
    return sums[:-1] / count if count > 0 else np.full(len(sums) - 1, np.nan)
