"""ONNX export of a trained network and an ONNX Runtime backend for :class:`~prokd.infer.predict.Predictor`.

The exported graph is the bare network: input ``image`` ``(batch, C, S, S)`` float32 (the preprocessed
2.5D slice stack on the model's canonical ``S x S`` grid), output ``logits`` ``(batch, 1 or 2, S, S)``; the
batch axis is dynamic (fixed slice sizes run 3-10 % faster on ONNX Runtime). Preprocessing and post-processing
stay in Python and travel with the file as metadata (``prokd.preprocess`` and ``prokd.postprocess``, JSON), so an ``.onnx`` file alone segments whole
volumes: ``prokd predict model.onnx scans/ --out masks/``.

Needs the ``onnx`` extra (``pip install "prokd[onnx]"``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prokd import __version__
from prokd.config import PostprocessConfig, PreprocessConfig, from_dict, plain
from prokd.eval.efficiency import interleaved_latency
from prokd.files import temporary_path
from prokd.infer.quantize import calibration_slices, quantize_int8, run_data
from prokd.infer.predict import Predictor
from prokd.runs.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    preprocess_from_checkpoint,
    resolve_checkpoint,
)

__all__ = ["ExportResult", "OnnxModel", "export_onnx", "load_onnx_predictor", "onnx_parameters"]

INPUT_NAME, OUTPUT_NAME = "image", "logits"
DEFAULT_OPSET = 17
QUANTIZATION_KEY = "prokd.quantization"


class OnnxError(ValueError):
    """An ONNX file that prokd cannot use, or an export that does not match its PyTorch network."""


@dataclass(frozen=True)
class ExportResult:
    """Where the model went and how well ONNX Runtime reproduces PyTorch on a random batch.

    Attributes:
        path: the written ``.onnx`` file.
        max_abs_diff: largest absolute logit difference between ONNX Runtime (the written graph, int8 included)
            and PyTorch.
        torch_ms / onnx_ms: median latency of one ``(1, C, S, S)`` slice, PyTorch vs ONNX Runtime, both with
            ``threads`` threads, timed together (interleaved).
        quantization: how an int8 graph was made (:func:`~prokd.infer.quantize.quantize_int8`), None for fp32.
    """

    path: Path
    max_abs_diff: float
    torch_ms: float
    onnx_ms: float
    quantization: dict[str, Any] | None = None


def _import_runtime() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise OnnxError(f'ONNX support needs the onnx extra: pip install "prokd[onnx]" ({error})') from error
    return onnx, onnxruntime


def export_onnx(
    run_or_file: str | Path,
    out: str | Path,
    which: str = "best",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    tolerance: float = 1e-3,
    threads: int = 2,
    int8: bool = False,
    data: str | Path | None = None,
    size: int | None = None,
) -> ExportResult:
    """Export the network of a RUN folder (or checkpoint file) to ``out`` and check it with ONNX Runtime.

    The fp32 graph must reproduce PyTorch within ``tolerance``. With ``int8`` it is then quantised
    (:func:`~prokd.infer.quantize.quantize_int8`), calibrated on training slices of ``data`` (default: the
    dataset the run was trained on, from its ``split.json``); the int8 graph's difference is reported, not
    checked: its effect is judged by Dice (``prokd evaluate`` on the ``.onnx`` file, or ``benchmarks/deploy.py``).

    Args:
        run_or_file: RUN folder or ``.pt`` checkpoint.
        out: target ``.onnx`` path; an existing file is replaced only with ``overwrite``.
        which: ``best`` or ``last`` checkpoint of a RUN folder.
        opset: ONNX opset version.
        tolerance: largest accepted absolute logit difference between the fp32 graph and PyTorch.
        threads: CPU threads for the latency comparison.
        int8: write the statically quantised graph.
        data: the dataset for int8 calibration.
        size: the grid side ``S`` of the graph and its preprocessing metadata, instead of the run's own (to time
            a fully convolutional network on another grid: ``prokd benchmark --size``).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        OnnxError: the exported graph disagrees with PyTorch by more than ``tolerance``.
    """
    onnx, _ = _import_runtime()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    checkpoint = resolve_checkpoint(run_or_file, which)
    payload = load_checkpoint(checkpoint)
    if size is not None:
        payload = {**payload, "preprocess": {**payload["preprocess"], "size": size}}
    model = model_from_checkpoint(payload, checkpoint)
    preprocess = preprocess_from_checkpoint(payload)
    calibration = calibration_slices(payload, data or run_data(checkpoint)) if int8 else None
    partial = temporary_path(out)
    try:
        _write_graph(onnx, model, payload, partial, opset)
        diff = _max_difference(model, OnnxModel(partial, threads), preprocess)
        if diff > tolerance:
            raise OnnxError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {tolerance:g}); not written")
        quantization = None
        if calibration is not None:
            quantization = quantize_int8(partial, partial, calibration)
            graph = onnx.load(str(partial))
            graph.metadata_props.add(key=QUANTIZATION_KEY, value=json.dumps(quantization))
            onnx.save(graph, str(partial))
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    onnx_model = OnnxModel(out, threads)
    shape = (1, preprocess.in_channels, preprocess.size, preprocess.size)
    latency = interleaved_latency([model, onnx_model], [shape, shape], threads=threads, repeats=10)
    if quantization is not None:  # the fp32 graph was checked; the int8 one is what was written
        diff = _max_difference(model, onnx_model, preprocess)
    return ExportResult(out, diff, latency[0]["median_ms"], latency[1]["median_ms"], quantization)


def _write_graph(onnx: Any, model: nn.Module, payload: dict[str, Any], path: Path, opset: int) -> None:
    """The fp32 graph of ``model`` with a dynamic batch axis and prokd's metadata, written to ``path``."""
    preprocess = preprocess_from_checkpoint(payload)
    example = torch.zeros(2, preprocess.in_channels, preprocess.size, preprocess.size)
    # The TorchScript exporter: seconds per model on a CPU where the torch.export-based one takes minutes. Its
    # warnings (deprecation, tracing, instance norm with input statistics, which is what MONAI's nets use) are
    # silenced; the exported graph is checked against PyTorch with ONNX Runtime instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    graph = onnx.load(str(path))
    metadata = {
        "prokd.version": __version__,
        "prokd.model": payload["model"]["name"],
        "prokd.preprocess": json.dumps(plain(payload["preprocess"])),
        "prokd.postprocess": json.dumps(plain(payload["postprocess"])),
        "prokd.split": json.dumps(payload["split"]),
        "prokd.label_map": json.dumps(payload["config"].get("label_map")),
    }
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def _max_difference(model: nn.Module, onnx_model: OnnxModel, preprocess: PreprocessConfig) -> float:
    """Largest absolute logit difference of the two on a seeded random ``(2, C, S, S)`` batch."""
    shape = (2, preprocess.in_channels, preprocess.size, preprocess.size)
    probe = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return float((onnx_model(probe) - model.eval()(probe)).abs().max())


def onnx_parameters(path: str | Path) -> int:
    """Parameter count of an ONNX graph: the elements of its weight initialisers (quantisation scales and zero
    points, one-element constants, are not counted)."""
    onnx, _ = _import_runtime()
    graph = onnx.load(str(path)).graph
    sizes = [int(np.prod(tensor.dims)) for tensor in graph.initializer]
    return sum(size for size in sizes if size > 1)


class OnnxModel(nn.Module):
    """An exported prokd network run by ONNX Runtime, callable like the PyTorch network.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx`.
        threads: intra-op threads of ONNX Runtime (None: its default).

    ``forward(x)``: ``x`` ``(B, C, S, S)`` float tensor → logits ``(B, 1 or 2, S, S)`` float tensor.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        _, onnxruntime = _import_runtime()
        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads sleep instead of spinning: a spinning pool takes the cores from whatever runs next
        # in the process (PyTorch, NumPy, another model), which made interleaved timings meaningless.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise OnnxError(f"{self.path}: not a loadable ONNX model ({error})") from error
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def quantized(self) -> bool:
        """Whether the graph was quantised to int8 by ``prokd export --int8``."""
        return QUANTIZATION_KEY in self.metadata

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().float().contiguous().numpy()})
        return torch.from_numpy(logits)

    def stored(self, key: str) -> Any:
        """The JSON metadata ``prokd.<key>`` of the file (e.g. ``split``: its RUN's case ids per split)."""
        name = f"prokd.{key}"
        if name not in self.metadata:
            raise OnnxError(f"{self.path}: no '{name}' metadata; export it again with this version's `prokd export`")
        return json.loads(self.metadata[name])

    def config(self, key: str, cls: type) -> Any:
        """The preprocessing or post-processing dataclass stored in the file's metadata."""
        return from_dict(cls, self.stored(key), prefix=f"{key}.")


def load_onnx_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A :class:`~prokd.infer.predict.Predictor` that runs the exported network with ONNX Runtime."""
    model = OnnxModel(path, threads)
    return Predictor(model, model.config("preprocess", PreprocessConfig), model.config("postprocess", PostprocessConfig))
