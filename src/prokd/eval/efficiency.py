"""Efficiency of a network: parameter count, multiply-accumulates per forward pass, CPU latency."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_parameters", "measure_latency"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements, trainable and frozen alike (shared parameters counted once, buffers
    such as batch-norm statistics not counted)."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_shape`` (e.g. (1, C, H, W)).

    Uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix products of
    convolutions, transposed convolutions, linear layers and attention (2 FLOPs per MAC) and ignores
    element-wise work (activations, normalisation, bias, pooling). A Conv2d contributes
    ``B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` MACs.
    """
    with _inference(model), FlopCounterMode(display=False) as counter:
        model(_example_input(model, input_shape))
    return counter.get_total_flops() // 2


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 1, 256, 256),
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 20,
) -> dict[str, float | int]:
    """Wall-clock time of one forward pass on a zero tensor, with ``threads`` intra-op threads.

    The model runs in eval mode under :func:`torch.inference_mode`; its training mode and the
    process's thread count are restored afterwards.

    Returns:
        ``{"median_ms", "p90_ms", "threads"}`` over ``repeats`` timed passes after ``warmup`` untimed ones.
    """
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ValueError(
            f"measure_latency: need threads >= 1, repeats >= 1, warmup >= 0; got {threads}, {repeats}, {warmup}"
        )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _inference(model):
            example = _example_input(model, input_shape)
            for _ in range(warmup):
                model(example)
            timings_ms = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(example)
                timings_ms.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "median_ms": float(np.median(timings_ms)),
        "p90_ms": float(np.percentile(timings_ms, 90)),
        "threads": threads,
    }


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode under ``torch.inference_mode``, restoring the model's training mode on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """Zeros of ``input_shape`` on the device and with the floating dtype of the model's first parameter."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return torch.zeros(tuple(input_shape))
    return torch.zeros(tuple(input_shape), device=parameter.device, dtype=parameter.dtype)
