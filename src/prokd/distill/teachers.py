"""Frozen teachers loaded from RUN folders, and the input mapping from the student's grid to theirs.

A teacher may use another grid size or another number of context slices than the student, but it must see
the same field of view with the same normalisation, so that resizing the student's input is all it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from prokd.config import PreprocessConfig
from prokd.eval.evaluate import evaluate_run, stored_summary
from prokd.models import forward_with_features, get_spec
from prokd.runs.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    preprocess_from_checkpoint,
    resolve_checkpoint,
)

SLICES_PER_FORWARD = 16
"""Slices per teacher forward pass when a whole volume goes through a teacher: bounds the memory its layer
outputs take."""


@dataclass
class Teacher:
    """A frozen network with the preprocessing it was trained with.

    Attributes:
        name: the RUN folder's name.
        model: the network, in eval mode with ``requires_grad`` off.
        preprocess: its preprocessing (grid size, context slices).
        taps: module names of its feature taps.
        score: its best validation Dice (on cases it never trained on), or None.
        out_channels: its logits' channels: 1 (sigmoid) or 2 (softmax).
        site_scores: its mean validation Dice per site (see :func:`validation_site_scores`), or None.
        site_trust: its label-free trust per site on a student's unlabeled images
            (:func:`~prokd.distill.trust.site_trust`), or None.
        checkpoint: the checkpoint file it was loaded from, or None (names its logit cache, see
            :mod:`prokd.distill.logit_cache`).
        temperature: its calibration temperature (:mod:`prokd.eval.calibration`); its logits are divided by it
            where the distillation reads them. 1 leaves them as they are.
        gland_extents: its training cases' range of gland extents on the grid (:mod:`prokd.infer.framing`), or
            None (runs trained before locate-then-segment).
    """

    name: str
    model: nn.Module
    preprocess: PreprocessConfig
    taps: tuple[str, ...]
    score: float | None
    out_channels: int
    site_scores: dict[str, float] | None = None
    site_trust: dict[str, float] | None = None
    checkpoint: Path | None = None
    temperature: float = 1.0
    gland_extents: tuple[float, float] | None = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, with_features: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits ``(B, C_out, S, S)`` on the student's grid ``S`` for a student batch ``x`` ``(B, C, S, S)``
        (``C`` >= the teacher's channels), and the tapped feature maps at the teacher's own resolution."""
        x_teacher = centre_channels(x, self.preprocess.in_channels)
        size = x.shape[-1]
        if self.preprocess.size != size:
            x_teacher = F.interpolate(x_teacher, size=(self.preprocess.size,) * 2, mode="bilinear", align_corners=False)
        if with_features:
            logits, features = forward_with_features(self.model, x_teacher, self.taps)
        else:
            logits, features = self.model(x_teacher), {}
        if logits.shape[-1] != size:
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        return logits, features

    def volume_logits(self, inputs: torch.Tensor, slices: int = SLICES_PER_FORWARD) -> torch.Tensor:
        """Logits ``(Z, C_out, S, S)`` for all ``Z`` slices of a volume's inputs ``(Z, C, S, S)``, ``slices`` at a
        time (on ``inputs``' device)."""
        return in_chunks(lambda batch: self(batch)[0], inputs, slices)


def in_chunks(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
              slices: int = SLICES_PER_FORWARD) -> torch.Tensor:
    """``forward`` applied to ``inputs`` ``(Z, ...)`` ``slices`` rows at a time, the results concatenated along
    the first dimension."""
    return torch.cat([forward(batch) for batch in inputs.split(slices)])


def centre_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The middle ``channels`` context slices of ``x`` ``(B, C, H, W)`` (C and ``channels`` odd)."""
    if channels > x.shape[1]:
        raise ValueError(f"need {channels} context channels, the batch has {x.shape[1]}")
    start = (x.shape[1] - channels) // 2
    return x[:, start : start + channels]


def load_teacher(run: str | Path, taps: list[str] | None = None) -> Teacher:
    """Load the best checkpoint of a RUN folder (or a checkpoint file) as a frozen teacher."""
    path = resolve_checkpoint(run, "best")
    payload = load_checkpoint(path)
    model = model_from_checkpoint(payload, path)
    model.requires_grad_(False)
    progress = payload.get("progress", {})
    score = progress.get("best_val_dice")
    return Teacher(
        name=Path(run).name,
        model=model,
        preprocess=preprocess_from_checkpoint(payload),
        taps=tuple(taps or get_spec(payload["model"]["name"]).default_taps),
        score=None if score is None or score < 0 else float(score),
        out_channels=int(payload["model"]["out_channels"]),
        checkpoint=path,
        gland_extents=payload["postprocess"].get("gland_extents"),
    )


def training_cases(run: str | Path) -> list[str]:
    """The case ids a teacher was trained on: the ``train`` part of the split its best checkpoint carries."""
    return list(load_checkpoint(resolve_checkpoint(run, "best"))["split"]["train"])


def validation_site_scores(run: str | Path, data: str | Path) -> dict[str, float]:
    """A teacher's mean 3D Dice per site on its run's validation cases (cases it never trained on), from
    ``RUN/eval/val/summary.json`` when that is newer than the best checkpoint, else evaluated now and written
    there."""
    summary = stored_summary(run, "val") or evaluate_run(run, data, split="val").summary
    return {site: float(stats["dice"]["mean"]) for site, stats in summary.items() if site != "overall"}


def teacher_runs(paths: list[str | Path]) -> list[Path]:
    """RUN folders from the given paths; a folder without checkpoints stands for its sub-folders that have one
    (the output of ``prokd train-teachers``)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if (path / "checkpoints" / "best.pt").is_file() or path.is_file():
            runs.append(path)
            continue
        found = sorted(p for p in path.glob("*") if (p / "checkpoints" / "best.pt").is_file()) if path.is_dir() else []
        if not found:
            raise CheckpointError(f"{path}: not a RUN folder and holds no RUN folders with checkpoints/best.pt")
        runs.extend(found)
    return runs


def check_compatible(student: PreprocessConfig, teacher: Teacher) -> None:
    """Raise ValueError unless ``teacher`` sees the student's input channel and field of view with the same
    normalisation (no channel choice reads channel 0 of single-channel data)."""
    theirs = teacher.preprocess
    same_channel = (theirs.channel or 0) == (student.channel or 0)
    same_normalisation = tuple(theirs.clip_percentiles) == tuple(student.clip_percentiles)
    if student.target_spacing is None and theirs.target_spacing is None:
        same_view = (student.crop_fraction or 1.0) == (theirs.crop_fraction or 1.0)
    elif student.target_spacing is not None and theirs.target_spacing is not None:
        same_view = abs(student.size * student.target_spacing - theirs.size * theirs.target_spacing) < 1e-6
    else:
        same_view = False
    if not (same_channel and same_normalisation and same_view):
        keys = ("size", "target_spacing", "crop_fraction", "clip_percentiles", "channel")
        differ = [f"preprocess.{key} {getattr(theirs, key)} (student: {getattr(student, key)})"
                  for key in keys if getattr(theirs, key) != getattr(student, key)]
        raise ValueError(
            f"teacher {teacher.name}: does not see the student's channel and field of view with the same "
            f"normalisation: {', '.join(differ)}; give the student the teacher's preprocess section"
        )
