"""ONNX export of a trained network and an ONNX Runtime backend for :class:`~prokd.infer.predict.Predictor`.

The exported graph is the bare network: input ``image`` ``(batch, C, S, S)`` float32 (the preprocessed
2.5D slice stack on the model's canonical ``S x S`` grid), output ``logits`` ``(batch, 1 or 2, S, S)``; the
batch axis is dynamic. Preprocessing and post-processing stay in Python and travel with the file as
metadata (``prokd.preprocess`` and ``prokd.postprocess``, JSON), so an ``.onnx`` file alone segments whole
volumes: ``prokd predict model.onnx scans/ --out masks/``.

Needs the ``onnx`` extra (``pip install "prokd[onnx]"``: onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prokd import __version__
from prokd.config import PostprocessConfig, PreprocessConfig, from_dict, plain
from prokd.eval.efficiency import measure_latency
from prokd.infer.predict import Predictor
from prokd.runs.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    preprocess_from_checkpoint,
    resolve_checkpoint,
)

__all__ = ["ExportResult", "OnnxModel", "export_onnx", "load_onnx_predictor"]

INPUT_NAME, OUTPUT_NAME = "image", "logits"
DEFAULT_OPSET = 17


class OnnxError(ValueError):
    """An ONNX file that prokd cannot use, or an export that does not match its PyTorch network."""


@dataclass(frozen=True)
class ExportResult:
    """Where the model went and how well ONNX Runtime reproduces PyTorch on a random batch.

    Attributes:
        path: the written ``.onnx`` file.
        max_abs_diff: largest absolute logit difference between ONNX Runtime and PyTorch.
        torch_ms / onnx_ms: median latency of one ``(1, C, S, S)`` slice, PyTorch vs ONNX Runtime, both with
            ``threads`` threads.
    """

    path: Path
    max_abs_diff: float
    torch_ms: float
    onnx_ms: float


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
) -> ExportResult:
    """Export the network of a RUN folder (or checkpoint file) to ``out`` and check it with ONNX Runtime.

    Args:
        run_or_file: RUN folder or ``.pt`` checkpoint.
        out: target ``.onnx`` path; an existing file is replaced only with ``overwrite``.
        which: ``best`` or ``last`` checkpoint of a RUN folder.
        opset: ONNX opset version.
        tolerance: largest accepted absolute logit difference between ONNX Runtime and PyTorch.
        threads: CPU threads for the latency comparison.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        OnnxError: the exported graph disagrees with PyTorch by more than ``tolerance``.
    """
    onnx, _ = _import_runtime()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    payload = load_checkpoint(resolve_checkpoint(run_or_file, which))
    model = model_from_checkpoint(payload)
    preprocess = preprocess_from_checkpoint(payload)
    size, channels = preprocess.size, preprocess.in_channels
    example = torch.zeros(2, channels, size, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    # The TorchScript exporter: seconds per model on a CPU where the torch.export-based one takes minutes. Its
    # warnings (deprecation, tracing, instance norm with input statistics, which is what MONAI's nets use) are
    # silenced; the exported graph is checked against PyTorch with ONNX Runtime below instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(partial),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    graph = onnx.load(str(partial))
    metadata = {
        "prokd.version": __version__,
        "prokd.model": payload["model"]["name"],
        "prokd.preprocess": json.dumps(plain(payload["preprocess"])),
        "prokd.postprocess": json.dumps(plain(payload["postprocess"])),
    }
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(partial))
    partial.replace(out)
    onnx_model = OnnxModel(out, threads)
    probe = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = float((onnx_model(probe) - model(probe)).abs().max())
    if diff > tolerance:
        out.unlink()
        raise OnnxError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {tolerance:g}); file removed")
    shape = (1, channels, size, size)
    latency = [measure_latency(m, shape, threads=threads, repeats=10)["median_ms"] for m in (model, onnx_model)]
    return ExportResult(out, diff, *latency)


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
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise OnnxError(f"{self.path}: not a loadable ONNX model ({error})") from error
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().float().contiguous().numpy()})
        return torch.from_numpy(logits)

    def config(self, key: str, cls: type) -> Any:
        """The preprocessing or post-processing dataclass stored in the file's metadata."""
        name = f"prokd.{key}"
        if name not in self.metadata:
            raise OnnxError(f"{self.path}: no '{name}' metadata; export it with `prokd export`")
        return from_dict(cls, json.loads(self.metadata[name]), prefix=f"{key}.")


def load_onnx_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """A :class:`~prokd.infer.predict.Predictor` that runs the exported network with ONNX Runtime."""
    model = OnnxModel(path, threads)
    return Predictor(model, model.config("preprocess", PreprocessConfig), model.config("postprocess", PostprocessConfig))
