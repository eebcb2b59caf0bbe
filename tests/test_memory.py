"""Memory estimates: the memory available, a training step's and a prediction's needs, and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from prokd.config import ConfigError
from prokd.data.io import VolumeError
from prokd.memory import available_memory, format_bytes, layer_output_bytes, training_step_bytes

GB = 1e9


def test_available_memory_is_capped_by_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert available_memory(meminfo, cgroup) == 20000000 * 1024
    (cgroup / "memory.max").write_text("8000000000\n")
    (cgroup / "memory.current").write_text("3000000000\n")
    assert available_memory(meminfo, cgroup) == 5_000_000_000
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory(meminfo, cgroup) == 20000000 * 1024
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


def test_layer_outputs_are_counted_once_per_leaf_module():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert layer_output_bytes(model, (1, 1, 8, 8)) == 4 * (4 * 64 + 4 * 64 + 2 * 64)
    assert model.training  # left as it was


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_a_training_step_estimate_bounds_the_measured_step():
    """One process measures the peak memory growth of two AdamW steps of unet-small (batch 8, 160²): its peak
    resident size during the steps (``VmHWM``, reset first through ``clear_refs``) less its size before them."""
    script = (
        "import re, torch; from pathlib import Path; from prokd.models import build_model;"
        "from prokd.losses import SegmentationLoss; from prokd.config import LossConfig; torch.set_num_threads(2);"
        "m = build_model('unet-small', 1, 1); loss = SegmentationLoss.from_config(LossConfig(), 1);"
        "opt = torch.optim.AdamW(m.parameters()); x = torch.randn(8, 1, 160, 160);"
        "y = (torch.rand(8, 1, 160, 160) > 0.5).float(); status = Path('/proc/self/status');"
        "kb = lambda key: int(re.search(key + r':\\s+(\\d+)', status.read_text())[1]) * 1024;"
        "Path('/proc/self/clear_refs').write_text('5'); before = kb('VmRSS')\n"
        "for _ in range(2):\n l, _ = loss(m(x), y); opt.zero_grad(); l.backward(); opt.step()\n"
        "print(kb('VmHWM') - before)"
    )
    measured = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    from prokd.models import build_model

    estimate = training_step_bytes(build_model("unet-small", 1, 1), (1, 160, 160), 8)
    assert measured <= estimate <= 3 * measured, (format_bytes(measured), format_bytes(estimate))


def test_a_run_that_would_not_fit_is_refused_before_its_folder_exists(phantom_data, tmp_path, tiny_config, monkeypatch):
    from prokd.train import runner

    monkeypatch.setattr(runner, "available_memory", lambda: 5_000_000)
    with pytest.raises(ConfigError, match=r"a training step of unet-small at 64² with train.batch_size 8 needs about "
                                          r"\d+ MB; 5 MB is available \(lower train.batch_size or preprocess.size\)"):
        runner.train_run(phantom_data, tmp_path / "run", tiny_config())
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def run_160(phantom_data, tmp_path_factory, tiny_config):
    """unet-small at the default 160² grid, one step."""
    from prokd.config import RunConfig
    from prokd.train.runner import train_run

    config = tiny_config(epochs=1, steps_per_epoch=1, batch_size=2).to_dict()
    config["preprocess"] = {"size": 160}
    run = tmp_path_factory.mktemp("mem") / "run"
    train_run(phantom_data, run, RunConfig.from_dict(config))
    return run


@pytest.fixture(scope="module")
def large_volume(tmp_path_factory):
    """A 512 x 512 x 64 int16 NIfTI volume."""
    image = (np.random.default_rng(0).normal(500, 100, size=(512, 512, 64))).astype(np.int16)
    path = tmp_path_factory.mktemp("large") / "large.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([0.4, 0.4, 3.0, 1.0])), path)
    return path


def test_predicting_a_512x512x64_volume_stays_under_2_gb(run_160, large_volume, tmp_path):
    """Peak resident memory of the whole ``prokd predict`` process (Python, torch and MONAI included): ``VmHWM``
    of its own address space. Not ``ru_maxrss``: Linux carries that over from the forked copy of the test process
    across ``exec``, so after a long test session it reported the size of pytest (1.3 GB) instead."""
    script = ("import re, sys; from pathlib import Path; from prokd.cli import app; sys.argv = ['prokd', *sys.argv[1:]]\n"
              "try:\n app()\nexcept SystemExit as e:\n assert not e.code, e.code\n"
              "print('PEAK', int(re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())[1]) * 1024)")
    done = subprocess.run([sys.executable, "-c", script, "predict", str(run_160), str(large_volume), "--out",
                           str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stdout.split("PEAK")[-1])
    assert peak < 2 * GB, format_bytes(peak)
    assert nib.load(tmp_path / "large_mask.nii.gz").shape == (512, 512, 64)

    from prokd.infer.predict import Predictor

    imports = 0.5 * GB  # python, torch, MONAI, nibabel: measured 0.44 GB
    assert Predictor.from_checkpoint(run_160).memory_needed(512 * 512 * 64) >= peak - imports


def test_a_volume_too_large_to_predict_is_refused_naming_it(run_160, large_volume, tmp_path, monkeypatch):
    from prokd.infer import predict

    monkeypatch.setattr(predict, "available_memory", lambda: 300_000_000)
    predictor = predict.Predictor.from_checkpoint(run_160)
    with pytest.raises(VolumeError, match=r"large.nii.gz: 64 x 512 x 512 voxels need about \d+ MB to predict; "
                                          r"300 MB is available"):
        predict.check_inputs(predictor, [large_volume], None)
    with pytest.raises(VolumeError, match="to predict"):
        predict.predict_file(predictor, large_volume, tmp_path)
    assert not list(tmp_path.iterdir())
