"""The demo pipeline end to end, with tiny time budgets (the real demo's quality is measured in BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from prokd.demo import DemoModel, run_demo
from prokd.train.run_folder import RunDirError


def test_demo_runs_every_stage(tmp_path):
    models = (DemoModel("teacher", "unet-small", 0.03), DemoModel("student", "unet-tiny", 0.03))
    evaluations = run_demo(tmp_path / "demo", models=models)
    assert set(evaluations) == {"teacher", "student"}
    for evaluation in evaluations.values():
        assert evaluation.rows and all(0.0 <= row["dice"] <= 1.0 for row in evaluation.rows)
        assert evaluation.rows[0]["distance_unit"] == "mm"
    assert len(list((tmp_path / "demo" / "predictions").glob("*_mask.nii.gz"))) == 1
    assert (tmp_path / "demo" / "student" / "eval" / "test" / "summary.json").is_file()
    with pytest.raises(RunDirError, match="not empty"):
        run_demo(tmp_path / "demo", models=models)
