"""Will it fit? Memory estimates checked before a run or a prediction starts, against the memory available.

Available memory is the kernel's ``MemAvailable`` (``/proc/meminfo``), capped by the process's cgroup limit
less its usage (a container's or a batch job's memory limit). Estimates are upper bounds calibrated on this
code (2 threads, float32, CPU):

- a training step: weights, gradients and AdamW's two moments (16 bytes per parameter), plus
  :data:`STEP_FACTOR` x the network's layer outputs for the batch (saved for backward, and their gradients);
  measured 1.3-2.4 x for unet-tiny, -small and -large at 160² and 256², batches 4-32;
- a frozen teacher's forward pass on the batch (no gradient): its layer outputs once;
- prediction of one volume: :data:`PREDICTION_BYTES_PER_VOXEL` bytes per voxel of the original grid (the
  image as float32, its normalised copy, the probability resampled back, the mask and its connected
  components; measured 33 on a 512 x 512 x 64 volume), plus the network's layer outputs for one chunk of slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "PREDICTION_BYTES_PER_VOXEL",
    "STEP_FACTOR",
    "available_memory",
    "format_bytes",
    "layer_output_bytes",
    "training_step_bytes",
]

STEP_FACTOR = 3.0
"""A training step's memory over the network's layer outputs for the batch (above the largest ratio measured)."""

PREDICTION_BYTES_PER_VOXEL = 40
"""Bytes per voxel of the original grid that predicting one volume holds at its peak (33 measured, rounded up)."""

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")


def available_memory(meminfo: Path = MEMINFO, cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """Bytes this process may still allocate: ``MemAvailable``, capped by the cgroup limit less its usage
    (v2 ``memory.max`` / ``memory.current``, else v1 ``memory.limit_in_bytes`` / ``memory.usage_in_bytes``);
    None when neither can be read (not Linux)."""
    candidates = [value for value in (_meminfo_available(meminfo), _cgroup_headroom(cgroup_root)) if value is not None]
    return min(candidates) if candidates else None


def layer_output_bytes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of every layer's output (leaf modules) in one forward pass of zeros of ``input_shape``, run without
    gradients on the model's device."""
    parameter = next(model.parameters())
    sizes: list[int] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        sizes.extend(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    hooks = [module.register_forward_hook(record) for module in model.modules() if not list(module.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sum(sizes)


def training_step_bytes(model: nn.Module, sample_shape: Sequence[int], batch_size: int) -> int:
    """Upper estimate of a training step's memory: 16 bytes per trainable parameter plus :data:`STEP_FACTOR` x the
    layer outputs of a batch of ``batch_size`` samples of ``sample_shape`` ``(C, S, S)``."""
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_sample = layer_output_bytes(model, (1, *sample_shape))
    return 16 * parameters + int(STEP_FACTOR * per_sample * batch_size)


def format_bytes(count: float) -> str:
    """``1.5 GB``, ``730 MB`` (decimal units)."""
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def _meminfo_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom(root: Path) -> int | None:
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit, usage = (root / limit_file).read_text().strip(), (root / usage_file).read_text().strip()
        except OSError:
            continue
        if not limit.isdigit() or not usage.isdigit() or int(limit) >= 2**60:  # "max", or v1's "no limit"
            return None
        return max(0, int(limit) - int(usage))
    return None
