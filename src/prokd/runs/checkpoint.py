"""Checkpoints: written atomically, plain containers only, enough on their own to predict.

A checkpoint is a dict::

    format          int, CHECKPOINT_FORMAT
    prokd_version   str
    model           {"name", "in_channels", "out_channels", "kwargs"}  (rebuilt via the model registry)
    state_dict      model weights
    preprocess      PreprocessConfig as a dict (grid, normalisation, context and the input channel of 4D images)
    postprocess     PostprocessConfig as a dict
    config          the resolved RunConfig as a dict
    split           {"train": [...], "val": [...], "test": [...]} case ids
    progress        {"epoch", "step", "elapsed_seconds", "best_val_dice", "best_epoch"}
    optimizer       optimizer state (absent from exported/pruned checkpoints)
    extra           objective state (e.g. distillation adapters), a dict of state dicts
    log             the run's ``metrics.jsonl`` records up to this epoch (absent from older checkpoints)

Loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prokd
from prokd.config import PostprocessConfig, PreprocessConfig, from_dict
from prokd.models import build_model
from prokd.files import atomic_write

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A file is not a usable prokd checkpoint; the message names the file."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    payload = {"format": CHECKPOINT_FORMAT, "prokd_version": prokd.__version__, **payload}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path}: {_load_failure(err)}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a prokd checkpoint of format {CHECKPOINT_FORMAT}")
    return payload


def _load_failure(err: Exception) -> str:
    """One line for a failed ``torch.load``: a refusal of pickled code (a global outside torch's weights-only
    allowlist), else the reason the weights-only unpickler gives or the error's first line. Torch's messages run
    to several lines of advice, including to load with ``weights_only=False``."""
    text = str(err).strip()
    if "Unsupported global:" in text:
        return "not a prokd checkpoint (refusing to unpickle code)"
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first_line = reason.group(1).strip() if reason else (text.splitlines() or [""])[0]
    return f"not a readable checkpoint ({type(err).__name__}: {first_line})"


def resolve_checkpoint(run_or_file: str | Path, which: str = "best") -> Path:
    """A checkpoint file from a RUN folder (``checkpoints/<which>.pt``) or a path to the file itself."""
    path = Path(run_or_file)
    if path.is_dir():
        path = path / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (is {run_or_file} a finished run?)")
    return path


def model_from_checkpoint(payload: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """Rebuild the network named in ``payload`` and load its weights; returned in eval mode.

    Raises:
        CheckpointError: naming ``source`` (the checkpoint file), when the weights do not fit the network the
            registry builds today.
    """
    spec = payload["model"]
    model = build_model(spec["name"], spec["in_channels"], spec["out_channels"], **spec["kwargs"])
    expected, stored = model.state_dict(), payload["state_dict"]
    problems = sorted(set(expected) ^ set(stored)) + [
        name for name in expected if name in stored and stored[name].shape != expected[name].shape
    ]
    if problems:
        raise CheckpointError(
            f"{source}: its weights do not fit the registered model '{spec['name']}' with "
            f"{dict(spec['kwargs']) or 'its default arguments'} ({len(problems)} tensors differ, e.g. {problems[0]}); "
            "was it trained with other defaults?"
        )
    model.load_state_dict(stored)
    return model.eval()


def preprocess_from_checkpoint(payload: dict[str, Any]) -> PreprocessConfig:
    return from_dict(PreprocessConfig, payload["preprocess"], prefix="preprocess.")


def postprocess_from_checkpoint(payload: dict[str, Any]) -> PostprocessConfig:
    return from_dict(PostprocessConfig, payload["postprocess"], prefix="postprocess.")
