"""Deployment benchmark: size, MACs and CPU latency of several models on several engines, timed together.

Every latency compared here comes from one process and one interleaved measurement
(:func:`~prokd.eval.efficiency.time_interleaved`): the models take turns (A, B, C, A, B, C, ...) with the same
threads, so a change of machine load during the measurement slows all of them alike, and medians with the
10th and 90th percentiles are reported. Slices are timed in one such measurement, volumes in a second one.
Per model and engine (a *candidate*) it times:

* ``slice``: one network forward pass on a ``(1, C, S, S)`` input (batch 1, the network alone), each timed pass
  right after an untimed one of the same model, as in a stream of slices (a small model is otherwise timed
  with a large one's data in the caches);
* ``volume`` and ``volume_tta``: the whole prediction of one volume, without and with flip test-time
  augmentation: preprocessing, the slices through the network in batches, post-processing; file reading is
  not included;
* the parts of that prediction apart: ``preprocess`` (normalisation and resampling to the grid), ``network``
  and ``network_tta`` (the batched slices), ``postprocess`` (back to the volume's grid, threshold, largest
  component).

Engines: ``torch`` (eager PyTorch), ``onnx`` (ONNX Runtime, fp32) and ``onnx-int8`` (ONNX Runtime with the
statically quantised graph of :func:`~prokd.infer.export.export_onnx`); a RUN folder is exported to a temporary
folder for the ONNX engines, an ``.onnx`` file runs as it is.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prokd.data.phantom import SITES, make_case
from prokd.eval.efficiency import count_macs, count_parameters, format_count, format_ms, time_interleaved
from prokd.infer.predict import Predictor

__all__ = [
    "ENGINES",
    "TIMINGS",
    "Candidate",
    "benchmark",
    "benchmark_volume",
    "load_candidates",
    "slice_table",
    "volume_table",
]

ENGINES = ("torch", "onnx", "onnx-int8")
TIMINGS = ("slice", "volume", "volume_tta", "preprocess", "network", "network_tta", "postprocess")
"""What is timed for every candidate, in the order of the result's ``ms`` dict."""

VOLUME_SHAPE = (24, 256, 256)
"""The default benchmark volume: a phantom case of 24 slices of 256 x 256 (site B's scanner)."""


@dataclass
class Candidate:
    """One model on one engine.

    Attributes:
        name: what the user gave (RUN folder or ``.onnx`` file), as printed.
        engine: ``torch``, ``onnx`` or ``onnx-int8``.
        predictor: the whole-volume predictor running the model on that engine.
        params: parameter count of the network.
        macs: multiply-accumulates of one slice on the benchmark grid (None for an ``.onnx`` file given as it
            is: ONNX graphs are not counted).
    """

    name: str
    engine: str
    predictor: Predictor
    params: int
    macs: int | None

    @property
    def label(self) -> str:
        return f"{self.name} [{self.engine}]"


def load_candidates(
    sources: Sequence[str | Path],
    engines: Sequence[str],
    threads: int,
    workdir: Path | None = None,
    size: int | None = None,
) -> list[Candidate]:
    """A candidate per RUN folder (or checkpoint) and engine, in the order given, and one per ``.onnx`` file (its
    engine is the file's own: ``onnx-int8`` for a quantised graph).

    Args:
        sources: RUN folders, checkpoint files or ``.onnx`` files.
        engines: engines for RUN folders and checkpoints (see :data:`ENGINES`).
        threads: intra-op threads of every engine.
        workdir: where RUN folders are exported for the ONNX engines (needed only for them).
        size: side ``S`` of the grid every candidate runs on (default: each model's own); an ``.onnx`` file's graph
            has its size fixed.

    Raises:
        ValueError: an unknown engine, or an ``.onnx`` file whose grid is not ``size``.
    """
    from prokd.infer.export import export_onnx, load_onnx_predictor, onnx_parameters

    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise ValueError(f"unknown engine {', '.join(unknown) or '(none given)'}; choose from {', '.join(ENGINES)}")
    if workdir is None and set(engines) != {"torch"}:
        raise ValueError("load_candidates: the ONNX engines need a workdir for the exported graphs")
    candidates = []
    for index, source in enumerate(sources):
        if Path(source).suffix == ".onnx":
            predictor = load_onnx_predictor(source, threads)
            own_size = predictor.preprocessor.config.size
            if size not in (None, own_size):
                raise ValueError(f"{source}: its graph takes {own_size} x {own_size} slices; --size {size} applies to "
                                 "RUN folders only")
            engine = "onnx-int8" if predictor.model.quantized else "onnx"
            candidates.append(Candidate(str(source), engine, predictor, onnx_parameters(source), None))
            continue
        reference = _resized(Predictor.from_checkpoint(source), size)
        params, macs = count_parameters(reference.model), count_macs(reference.model, slice_shape(reference))
        for engine in engines:
            if engine == "torch":
                predictor = reference
            else:
                exported = export_onnx(source, workdir / f"{index}-{engine}.onnx", int8=engine == "onnx-int8",
                                       threads=threads, size=size)
                predictor = load_onnx_predictor(exported.path, threads)
            candidates.append(Candidate(str(source), engine, predictor, params, macs))
    return candidates


def benchmark(
    candidates: Sequence[Candidate],
    image: np.ndarray,
    spacing: tuple[float, float, float] | None,
    threads: int = 2,
    repeats: int = 20,
    warmup: int = 2,
    volume_repeats: int | None = None,
) -> list[dict[str, Any]]:
    """Time every candidate on one slice and on the whole prediction of ``image`` ``(Z, Y, X)`` (canonical
    orientation), in two interleaved measurements, slices then volumes (see the module docstring): ``repeats``
    timed rounds each (``volume_repeats`` for the volumes, if given) after ``warmup`` untimed ones.

    Returns:
        one row per candidate: ``name``, ``engine``, ``params``, ``macs``, ``slice_input``, ``volume_shape``,
        ``ms`` (per timing of :data:`TIMINGS`: ``median``, ``p10``, ``p90``), ``speedup`` (the first candidate's
        median over this one's, for ``slice``, ``volume`` and ``volume_tta``), ``threads``, ``repeats``,
        ``volume_repeats``.
    """
    calls = [_timed_calls(candidate, image, spacing) for candidate in candidates]
    slices = time_interleaved([own[0] for own in calls], threads, warmup, repeats, settle=1)
    volumes = time_interleaved([call for own in calls for call in own[1:]], threads, warmup, volume_repeats or repeats)
    parts = len(TIMINGS) - 1
    rows = []
    for number, candidate in enumerate(candidates):
        own = [slices[number], *volumes[number * parts : (number + 1) * parts]]
        rows.append({
            "name": candidate.name,
            "engine": candidate.engine,
            "params": candidate.params,
            "macs": candidate.macs,
            "slice_input": list(slice_shape(candidate.predictor)),
            "volume_shape": list(image.shape),
            "ms": {timing: _spread(ms) for timing, ms in zip(TIMINGS, own)},
            "threads": threads,
            "repeats": repeats,
            "volume_repeats": volume_repeats or repeats,
        })
    for row in rows:
        row["speedup"] = {key: rows[0]["ms"][key]["median"] / row["ms"][key]["median"]
                          for key in ("slice", "volume", "volume_tta")}
    return rows


def benchmark_volume(seed: int = 0, shape: Sequence[int] = VOLUME_SHAPE) -> tuple[np.ndarray, tuple[float, ...]]:
    """A phantom case of ``shape`` ``(Z, Y, X)`` with ``Y == X`` (site B's scanner, a gland in the middle) as float32,
    with its spacing: the default volume of ``prokd benchmark``."""
    slices, rows, cols = shape
    if rows != cols:
        raise ValueError(f"the benchmark phantom has square slices; got {rows} x {cols}")
    style = SITES[1]
    style = dataclasses.replace(style, matrix=rows, slices_range=(slices, slices),
                                slice_thickness=max(style.slice_thickness, 45.0 / slices + 0.01))
    case = make_case(style, np.random.default_rng(seed))
    return case.image.astype(np.float32), case.spacing


def slice_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-slice table: size, MACs, latency (median, 10th-90th percentile) and speed-up."""
    header = ["model", "engine", "params", "MACs", "slice (p10-p90)", "speed-up"]
    return header, [
        [row["name"], row["engine"], format_count(row["params"]), format_count(row["macs"]),
         _with_spread(row["ms"]["slice"]), f"{row['speedup']['slice']:.1f}x"]
        for row in rows
    ]


def volume_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the whole-volume table: total without and with flip TTA, speed-ups, and the parts
    without TTA (the network with TTA is in the rows' ``ms``)."""
    header = ["model", "engine", "volume", "speed-up", "with TTA", "speed-up", "pre", "network", "post"]
    return header, [
        [row["name"], row["engine"], format_ms(row["ms"]["volume"]["median"]), f"{row['speedup']['volume']:.1f}x",
         format_ms(row["ms"]["volume_tta"]["median"]), f"{row['speedup']['volume_tta']:.1f}x",
         *(format_ms(row["ms"][key]["median"]) for key in ("preprocess", "network", "postprocess"))]
        for row in rows
    ]


def slice_shape(predictor: Predictor) -> tuple[int, int, int, int]:
    """``(1, C, S, S)``: one slice on the predictor's grid."""
    config = predictor.preprocessor.config
    return 1, config.in_channels, config.size, config.size


def _timed_calls(
    candidate: Candidate, image: np.ndarray, spacing: tuple[float, float, float] | None
) -> list[Callable[[], object]]:
    """The callables of :data:`TIMINGS` for one candidate; their inputs are prepared here, untimed."""
    predictor = candidate.predictor
    one_slice = torch.randn(slice_shape(predictor), generator=torch.Generator().manual_seed(0))
    grid, plan = predictor.prepare(image, spacing)
    probability = predictor.grid_probability(grid, flip_tta=False)

    @torch.inference_mode()
    def network_slice() -> object:
        return predictor.model(one_slice)

    return [
        network_slice,
        partial(predictor.predict, image, spacing, flip_tta=False),
        partial(predictor.predict, image, spacing, flip_tta=True),
        partial(predictor.prepare, image, spacing),
        partial(predictor.grid_probability, grid, flip_tta=False),
        partial(predictor.grid_probability, grid, flip_tta=True),
        partial(predictor.finish, probability, plan),
    ]


def _with_spread(stats: dict[str, float]) -> str:
    return f"{format_ms(stats['median'])} ({stats['p10']:.1f}-{stats['p90']:.1f})"


def _spread(ms: Sequence[float]) -> dict[str, float]:
    return {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)), "p90": float(np.percentile(ms, 90))}


def _resized(predictor: Predictor, size: int | None) -> Predictor:
    """``predictor`` on a ``size x size`` grid instead of its own (the networks are fully convolutional)."""
    if size is None or size == predictor.preprocessor.config.size:
        return predictor
    preprocess = dataclasses.replace(predictor.preprocessor.config, size=size)
    return Predictor(predictor.model, preprocess, predictor.postprocess, predictor.batch_size)


def temporary_workdir() -> tempfile.TemporaryDirectory:
    """A temporary folder for the ONNX exports of one benchmark, removed when closed."""
    return tempfile.TemporaryDirectory(prefix="prokd-benchmark-")
