"""Static int8 quantization of an exported model: QDQ operators, the Dice kept on the phantom, calibration slices
from the images the run learned from."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from prokd.infer.export import OnnxModel, export_onnx  # noqa: E402
from prokd.infer.quantize import calibration_slices, learned_from  # noqa: E402
from prokd.runs.checkpoint import load_checkpoint  # noqa: E402
from prokd.train.runner import train_run  # noqa: E402

INT8_DICE_TOLERANCE = 0.02
"""Largest accepted drop of the mean 3D Dice from fp32 to int8 on the phantom's test cases."""


@pytest.fixture(scope="module")
def segmenting_run(phantom_data, tiny_config, tmp_path_factory):
    """A run trained long enough to segment the phantom (val Dice ~0.8), so that int8 has something to lose."""
    run = tmp_path_factory.mktemp("int8") / "run"
    train_run(phantom_data, run, tiny_config(epochs=6, steps_per_epoch=15))
    return run


def test_int8_export_is_static_qdq_and_keeps_the_dice(segmenting_run, phantom_data, caplog):
    from prokd.eval.evaluate import evaluate_run

    result = export_onnx(segmenting_run, segmenting_run.parent / "int8.onnx", threads=1, int8=True)
    assert "pre-processing" not in caplog.text  # ONNX Runtime's advice, not for an already folded graph
    assert result.quantization["method"] == "static QDQ" and 32 <= result.quantization["calibration_slices"] <= 64
    import onnx

    operators = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators
    assert OnnxModel(result.path).quantized and not OnnxModel(result.path).stored("label_map")
    fp32 = evaluate_run(segmenting_run, phantom_data, write=False).summary["overall"]["dice"]["mean"]
    int8 = evaluate_run(result.path, phantom_data, write=False, threads=1).summary["overall"]["dice"]["mean"]
    assert fp32 > 0.6
    assert abs(fp32 - int8) <= INT8_DICE_TOLERANCE


def test_int8_calibration_needs_the_run_data(trained_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="calibration data not found"):
        export_onnx(trained_run, tmp_path / "int8.onnx", int8=True, data=tmp_path / "nowhere")
    assert not list(tmp_path.iterdir())


def test_int8_calibration_of_a_run_without_labels_uses_the_images_it_learned_from(trained_run, phantom_data):
    payload = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    assert learned_from(payload) == set(payload["split"]["train"])
    test = payload["split"]["test"]
    label_free = {**payload, "split": {"train": [], "val": [], "test": test},
                  "config": {**payload["config"], "distill": {**(payload["config"]["distill"] or {}), "no_labels": True}}}
    assert learned_from(label_free) == set(test)
    slices = calibration_slices(label_free, phantom_data, count=8)
    assert slices.shape == (8, *calibration_slices(payload, phantom_data, count=8).shape[1:])
