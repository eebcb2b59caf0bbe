"""Every YAML shipped in configs/ is valid (the demo's own experiment is tested in test_demo.py): an example
that fails to load fails CI. Experiments are validated with their ``data`` pointed at the phantom."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prokd.eval.efficiency import count_parameters
from prokd.models import build_model

from prokd.config import load_config
from prokd.experiment.config import parse_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(path for path in CONFIGS.glob("*.yaml") if {"teachers", "students"} & set(yaml.safe_load(path.read_text())))
RUN_CONFIGS = sorted(set(CONFIGS.glob("*.yaml")) - set(EXPERIMENTS))


def test_configs_folder_has_both_kinds():
    assert {p.name for p in EXPERIMENTS} >= {"promise12.yaml", "experiment_phantom.yaml"}
    assert {p.name for p in RUN_CONFIGS} >= {"promise12_train.yaml", "distill.yaml"}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_loads(path):
    config = load_config(path, {"distill.teachers": ["teacher"]} if path.name == "distill.yaml" else None)
    assert config.to_dict()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_config_is_valid(path, phantom_data):
    raw = {**yaml.safe_load(path.read_text()), "data": str(phantom_data)}
    config = parse_experiment(raw, path)
    assert config.teachers or config.students
    students = {entry.model for entry in config.students}
    assert all(count_parameters(build_model(name)) <= 0.5e6 for name in students), f"students over 0.5 M: {students}"
