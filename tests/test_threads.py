"""Default CPU threads: OMP_NUM_THREADS when set, else the process's CPU affinity capped by its cgroup quota; a
run without train.threads trains with that many."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from prokd.config import ConfigError
from prokd.threads import available_cores, cgroup_cpu_limit, default_threads
from prokd.train.runner import train_run


def cgroup(root: Path, v2: str | None = None, v1: tuple[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if v2 is not None:
        (root / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(v1[0] + "\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(v1[1] + "\n")
    return root


@pytest.mark.parametrize(
    ("v2", "v1", "limit"),
    [
        ("150000 100000", None, 2),  # --cpus 1.5: two threads
        ("100000 100000", None, 1),
        ("max 100000", None, None),
        (None, ("250000", "100000"), 3),
        (None, ("-1", "100000"), None),
        (None, None, None),
    ],
)
def test_cgroup_cpu_limit_v2_and_v1(tmp_path, v2, v1, limit):
    assert cgroup_cpu_limit(cgroup(tmp_path / "cg", v2, v1)) == limit


def test_available_cores_is_the_affinity_capped_by_the_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(cgroup(tmp_path / "none")) == affinity
    assert available_cores(cgroup(tmp_path / "one", v2="50000 100000")) == 1
    assert available_cores(cgroup(tmp_path / "many", v2=f"{100000 * (affinity + 4)} 100000")) == affinity


def test_omp_num_threads_wins_and_a_bad_value_is_refused(monkeypatch, tmp_path):
    no_quota = cgroup(tmp_path / "cg")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(no_quota) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    assert default_threads(no_quota) == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads(no_quota) == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        with pytest.raises(ConfigError, match=f"OMP_NUM_THREADS='{bad}': must be a positive whole number"):
            default_threads(no_quota)


def test_a_run_without_train_threads_uses_omp_num_threads(monkeypatch, phantom_data, tmp_path, tiny_config):
    previous = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        train_run(phantom_data, tmp_path / "run", tiny_config(threads=None, epochs=1, steps_per_epoch=1))
        assert json.loads((tmp_path / "run" / "env.json").read_text())["threads"] == 1
    finally:
        torch.set_num_threads(previous)
