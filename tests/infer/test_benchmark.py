"""`prokd benchmark`: every model on every engine timed together; tables, JSON and speed-ups."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from prokd.cli import app  # noqa: E402
from prokd.infer.benchmark import (  # noqa: E402
    TIMINGS,
    benchmark,
    benchmark_volume,
    load_candidates,
    slice_table,
    volume_table,
)
from prokd.train.runner import train_run  # noqa: E402


@pytest.fixture(scope="module")
def two_runs(phantom_data, tiny_config, tmp_path_factory):
    """A unet-small and a mobile-unet run, a few steps each: timing needs weights, not accuracy."""
    folder = tmp_path_factory.mktemp("benchmark")
    runs = []
    for name in ("unet-small", "mobile-unet"):
        config = tiny_config(epochs=1, steps_per_epoch=2)
        config.model.name = name
        train_run(phantom_data, folder / name, config)
        runs.append(folder / name)
    return runs


def test_every_engine_is_timed_with_its_parts_and_speedups(two_runs, tmp_path):
    candidates = load_candidates(two_runs, ["torch", "onnx", "onnx-int8"], threads=1, workdir=tmp_path)
    assert [(c.name, c.engine) for c in candidates] == [
        (str(run), engine) for run in two_runs for engine in ("torch", "onnx", "onnx-int8")
    ]
    image, spacing = benchmark_volume(shape=(12, 96, 96))
    rows = benchmark(candidates, image, spacing, threads=1, repeats=3, warmup=1)
    for row in rows:
        assert list(row["ms"]) == list(TIMINGS) and row["volume_shape"] == [12, 96, 96]
        for stats in row["ms"].values():
            assert 0 < stats["p10"] <= stats["median"] <= stats["p90"]
        assert row["slice_input"] == [1, 1, 64, 64] and row["threads"] == 1 and row["repeats"] == 3
    assert rows[0]["speedup"] == {"slice": 1.0, "volume": 1.0, "volume_tta": 1.0}
    assert rows[3]["params"] < rows[0]["params"] / 1.5 and rows[3]["macs"] < rows[0]["macs"]
    assert rows[4]["speedup"]["slice"] == pytest.approx(rows[0]["ms"]["slice"]["median"] / rows[4]["ms"]["slice"]["median"])
    assert len(slice_table(rows)[1]) == len(volume_table(rows)[1]) == 6


def test_an_onnx_file_runs_as_it_is_and_size_sets_a_runs_grid(two_runs, tmp_path):
    from prokd.infer.export import export_onnx

    int8 = export_onnx(two_runs[1], tmp_path / "student.onnx", threads=1, int8=True).path
    (candidate,) = load_candidates([int8], ["torch"], threads=1, workdir=tmp_path)
    assert candidate.engine == "onnx-int8" and candidate.macs is None and candidate.params > 0
    with pytest.raises(ValueError, match="student.onnx: its graph takes 64 x 64 slices; --size 96 applies"):
        load_candidates([int8], ["torch"], threads=1, workdir=tmp_path, size=96)
    resized = load_candidates(two_runs[1:], ["torch", "onnx"], threads=1, workdir=tmp_path, size=96)
    image, spacing = benchmark_volume(shape=(8, 64, 64))
    rows = benchmark([candidate, *resized], image, spacing, threads=1, repeats=2, warmup=0)
    assert [row["slice_input"] for row in rows] == [[1, 1, 64, 64], [1, 1, 96, 96], [1, 1, 96, 96]]


def test_the_command_prints_both_tables_and_writes_json(two_runs, tmp_path):
    out = tmp_path / "bench.json"
    args = ["benchmark", *map(str, two_runs), "--threads", "1", "--repeats", "2", "--json", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "one slice, batch 1" in result.output and "whole volume" in result.output
    assert max(map(len, result.output.splitlines())) <= 80
    rows = json.loads(out.read_text())
    assert [row["engine"] for row in rows] == ["torch", "torch"] and rows[1]["speedup"]["slice"] > 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "bench.json: already exists" in again.output


def test_an_unknown_engine_is_one_line(two_runs, tmp_path):
    result = CliRunner().invoke(app, ["benchmark", str(two_runs[0]), "--engine", "tensorrt"])
    assert result.exit_code == 1 and "unknown engine tensorrt; choose from torch, onnx, onnx-int8" in result.output
