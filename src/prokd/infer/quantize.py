"""int8 quantisation of an exported network with ONNX Runtime, calibrated on the run's own training slices.

Static quantisation (Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018) in ONNX Runtime's QDQ format: the convolutions' weights int8 per
output channel, their inputs uint8 per tensor with ranges (min-max) observed on calibration slices. Calibration slices are
preprocessed exactly as at prediction time (:meth:`~prokd.infer.predict.Predictor.prepare`) from the run's
training cases, spread evenly over cases and slices, so the ranges are those of the images the model will see.
Only where static quantisation fails is the graph quantised dynamically (weights int8, activations quantised
per batch at run time), and the returned description says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from prokd.config import PreprocessConfig
from prokd.data.datalist import load_cases
from prokd.data.preprocess import Preprocessor
from prokd.data.slices import volume_inputs
from prokd.infer.predict import read_input
from prokd.runs.checkpoint import preprocess_from_checkpoint

__all__ = ["CALIBRATION_SLICES", "calibration_slices", "quantize_int8", "run_data"]

CALIBRATION_SLICES = 64
"""Slices the activation ranges are observed on."""
CALIBRATION_BATCH = 8
QUANTIZED_OPERATORS = ("Conv", "ConvTranspose")
"""Operators computed in int8. Normalisation and activations stay in float between them: quantising instance norm
too cost the phantom U-Net 7 Dice points instead of 1 (batch norm is folded into the convolutions anyway)."""


def run_data(checkpoint: Path) -> Path:
    """The dataset a RUN was trained on, as recorded in the RUN folder's ``split.json`` (``checkpoint`` is
    ``RUN/checkpoints/<name>.pt``).

    Raises:
        FileNotFoundError: no ``split.json`` with a ``data`` entry in the RUN folder (give ``--data``).
    """
    split_file = checkpoint.parent.parent / "split.json"
    data = json.loads(split_file.read_text()).get("meta", {}).get("data") if split_file.is_file() else None
    if not data:
        raise FileNotFoundError(
            f"{checkpoint}: no split.json in its RUN folder naming the training data; give the data with --data"
        )
    return Path(data)


def calibration_slices(
    payload: dict[str, Any], data: str | Path, count: int = CALIBRATION_SLICES
) -> np.ndarray:
    """``count`` network inputs ``(count, C, S, S)`` float32 from the images the checkpoint ``payload`` learned from
    in ``data`` (:func:`learned_from`): every such case contributes, slices evenly spaced through each volume.

    Raises:
        FileNotFoundError: ``data`` does not exist.
        ValueError: none of those cases is in ``data``.
    """
    if not Path(data).exists():
        raise FileNotFoundError(f"{data}: calibration data not found (give the run's dataset with --data)")
    preprocess: PreprocessConfig = preprocess_from_checkpoint(payload)
    index = load_cases(data)
    wanted = learned_from(payload)
    cases = [case for case in index.labeled if case.case_id in wanted]
    if not cases:
        raise ValueError(f"{data}: holds none of the {len(wanted)} cases the run learned from; give the run's dataset")
    preprocessor = Preprocessor(preprocess)
    per_case = -(-count // len(cases))
    inputs = []
    for case in cases:
        volume, image = read_input(case.image, preprocess.channel)
        grid = preprocessor.image_to_grid(image, preprocessor.plan(image.shape, volume.geometry.spacing))
        inputs.append(volume_inputs(grid, preprocess.context)[_spread_indices(len(grid), per_case)])
    stacked = np.concatenate(inputs)
    return stacked[_spread_indices(len(stacked), count)].astype(np.float32)


def learned_from(payload: dict[str, Any]) -> set[str]:
    """The labeled cases whose images the checkpoint ``payload`` learned from: its training cases, or, for a run
    distilled without labels (``distill.no_labels``), its test cases, whose images it saw without their labels."""
    distill = payload.get("config", {}).get("distill") or {}
    return set(payload["split"]["test" if distill.get("no_labels") else "train"])


def _spread_indices(length: int, count: int) -> np.ndarray:
    """``min(count, length)`` distinct indices into ``range(length)``, evenly spread, first and last included."""
    return np.linspace(0, length - 1, min(count, length)).round().astype(int)


def quantize_int8(source: Path, target: Path, calibration: np.ndarray) -> dict[str, Any]:
    """Quantise the fp32 graph ``source`` to int8 into ``target`` (may be the same file).

    Args:
        source: fp32 ONNX graph with input ``image`` ``(B, C, S, S)``.
        target: where the int8 graph goes.
        calibration: ``(N, C, S, S)`` float32 calibration inputs.

    Returns:
        a JSON-able description: ``method`` (``static QDQ`` or ``dynamic``), ``calibration_slices``,
        ``weights``, ``activations`` and, after a fallback, ``static_error``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(
                {"image": calibration[start : start + CALIBRATION_BATCH]}
                for start in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    try:
        with _without_preprocessing_advice():
            quantize_static(
                str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPERATORS),
            )
        return {"method": "static QDQ", "calibration_slices": int(len(calibration)), "operators": list(QUANTIZED_OPERATORS),
                "weights": "int8 per channel", "activations": "uint8 per tensor, min-max"}
    except Exception as error:  # ONNX Runtime raises its own types; the fallback is reported, not hidden
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        return {"method": "dynamic", "static_error": f"{type(error).__name__}: {error}"[:300],
                "weights": "int8", "activations": "uint8, ranges per batch at run time"}


class _PreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop ONNX Runtime's advice to pre-process the graph before quantising it (logged twice per model on the
    root logger, with links): the exported graph has its normalisations folded and shapes fixed already."""
    advice = _PreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)
