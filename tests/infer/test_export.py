"""ONNX export: the exported graph reproduces PyTorch, carries its preprocessing, segments whole volumes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from prokd.data.datalist import load_cases, load_case  # noqa: E402
from prokd.infer.export import OnnxError, OnnxModel, export_onnx, load_onnx_predictor  # noqa: E402
from prokd.infer.predict import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def exported(trained_run):
    return export_onnx(trained_run, trained_run.parent / "model.onnx", threads=1)


def test_export_matches_pytorch_and_keeps_preprocessing(exported, trained_run):
    assert exported.path.is_file() and exported.max_abs_diff < 1e-4
    assert exported.torch_ms > 0 and exported.onnx_ms > 0
    model = OnnxModel(exported.path)
    assert model.metadata["prokd.model"] == "unet-small"
    reference = Predictor.from_checkpoint(trained_run)
    assert model.config("preprocess", type(reference.preprocessor.config)).size == 64
    # the training range of gland extents travels too, so `prokd predict model.onnx --relocate N` can reframe
    carried = load_onnx_predictor(exported.path, threads=1).postprocess
    assert carried.gland_extents is not None and carried.gland_extents == pytest.approx(
        reference.postprocess.gland_extents)


def test_onnx_predictor_segments_a_volume_like_pytorch(exported, trained_run, phantom_data):
    case = load_case(load_cases(phantom_data).labeled[0])
    reference = Predictor.from_checkpoint(trained_run).predict(case.image, case.geometry.spacing)
    onnx = load_onnx_predictor(exported.path, threads=1).predict(case.image, case.geometry.spacing)
    np.testing.assert_allclose(onnx.probability, reference.probability, atol=1e-4)
    assert onnx.mask.shape == case.image.shape


def test_export_never_overwrites_silently(exported, trained_run):
    with pytest.raises(FileExistsError, match="model.onnx"):
        export_onnx(trained_run, exported.path)


def test_unreadable_onnx_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(OnnxError, match="broken.onnx"):
        OnnxModel(bad)


def test_onnx_file_without_prokd_metadata_is_refused(exported, tmp_path):
    import onnx

    graph = onnx.load(str(exported.path))
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, str(bare))
    with pytest.raises(OnnxError, match="prokd.preprocess"):
        load_onnx_predictor(bare)


def test_an_exported_file_is_evaluated_on_its_run_split(exported, trained_run, phantom_data):
    from prokd.eval.evaluate import evaluate_run

    from_onnx = evaluate_run(exported.path, phantom_data, split="val", write=False, threads=1)
    from_run = evaluate_run(trained_run, phantom_data, split="val", write=False)
    assert [row["case"] for row in from_onnx.rows] == [row["case"] for row in from_run.rows]
    np.testing.assert_allclose([r["dice"] for r in from_onnx.rows], [r["dice"] for r in from_run.rows], atol=1e-3)
