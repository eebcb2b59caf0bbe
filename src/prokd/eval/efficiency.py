"""Efficiency of a network: parameter count, multiply-accumulates per forward pass, CPU latency.

Latencies that are compared with each other are measured together (:func:`interleaved_latency`): in one
process, with the same threads, the models taking turns (A, B, C, A, B, C, ...), so that a change of
machine load during the measurement affects every model alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prokd.eval.metrics import MISSING

__all__ = [
    "count_macs",
    "format_count",
    "format_ms",
    "count_parameters",
    "interleaved_latency",
    "measure_latency",
    "time_interleaved",
    "torch_threads",
]


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
    """Wall-clock time of one forward pass on a zero tensor, with ``threads`` intra-op threads (one model of
    :func:`interleaved_latency`).

    Returns:
        ``{"median_ms", "p90_ms", "threads", "repeats"}`` over ``repeats`` timed passes after ``warmup`` untimed ones.
    """
    return interleaved_latency([model], [input_shape], threads, warmup, repeats)[0]


def interleaved_latency(
    models: Sequence[nn.Module],
    input_shapes: Sequence[Sequence[int]],
    threads: int = 2,
    warmup: int = 3,
    repeats: int = 20,
) -> list[dict[str, float | int]]:
    """Wall-clock time of one forward pass of each model on a zero tensor of its input shape (e.g. (1, C, H, W)),
    all models timed in one pass: ``warmup`` untimed rounds, then ``repeats`` timed rounds, each round running
    every model once in turn (:func:`time_interleaved`).

    The models run in eval mode under :func:`torch.inference_mode`; their training modes and the process's
    thread count are restored afterwards.

    Returns:
        one ``{"median_ms", "p90_ms", "threads", "repeats"}`` per model, in the order given.
    """
    if len(models) != len(input_shapes):
        raise ValueError(f"interleaved_latency: {len(models)} models but {len(input_shapes)} input shapes")
    with ExitStack() as stack:
        for model in models:
            stack.enter_context(_inference(model))
        calls = [partial(model, _example_input(model, shape)) for model, shape in zip(models, input_shapes)]
        timings = time_interleaved(calls, threads, warmup, repeats)
    return [
        {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "threads": threads,
         "repeats": repeats}
        for ms in timings
    ]


def time_interleaved(
    calls: Sequence[Callable[[], object]], threads: int, warmup: int, repeats: int, settle: int = 0
) -> list[list[float]]:
    """Milliseconds of each of ``repeats`` calls of every callable, with ``threads`` intra-op threads.

    ``warmup`` untimed rounds come first; in every round each callable runs once, in the order given (A, B, C,
    A, B, C, ...), after ``settle`` untimed calls of its own: with ``settle=1`` a small model is timed with its
    weights in the caches, as in a stream of slices, rather than just after a large model evicted them.

    Returns:
        per callable, its ``repeats`` timings in ms.
    """
    if threads < 1 or repeats < 1 or min(warmup, settle) < 0:
        raise ValueError(f"time_interleaved: need threads >= 1, repeats >= 1, warmup >= 0, settle >= 0; got {threads}, "
                         f"{repeats}, {warmup}, {settle}")
    timings_ms: list[list[float]] = [[] for _ in calls]
    with torch_threads(threads):
        for _ in range(warmup):
            for call in calls:
                call()
        for _ in range(repeats):
            for call, timings in zip(calls, timings_ms):
                for _ in range(settle):
                    call()
                start = time.perf_counter()
                call()
                timings.append((time.perf_counter() - start) * 1000.0)
    return timings_ms


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``threads`` intra-op torch threads inside the block; the previous count is restored on exit."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def format_count(value: float | None) -> str:
    """``412345`` → ``"0.41 M"``; ``2.0e9`` → ``"2.00 G"``; ``48e6`` → ``"48.0 M"``."""
    if value is None:
        return MISSING
    if value >= 1e9:
        return f"{value / 1e9:.2f} G"
    return f"{value / 1e6:.2f} M" if value < 1e7 else f"{value / 1e6:.1f} M"


def format_ms(ms: float | None) -> str:
    if ms is None:
        return MISSING
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"
