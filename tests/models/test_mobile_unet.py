"""The CPU-fast student: size, shapes, taps, its layer plan, and a distillation on the phantom."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prokd.config import DistillConfig
from prokd.models import build_model, get_spec, list_models
from prokd.models.features import tap_channels
from prokd.models.mobile_unet import MobileUNet, SeparableBlock
from prokd.train.runner import train_run

MOBILE = [spec.name for spec in list_models() if spec.name.startswith("mobile-unet")]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", MOBILE)
def test_registered_fast_students_are_small_and_tap_four_halving_levels(name: str) -> None:
    model = build_model(name, in_channels=3)
    assert sum(p.numel() for p in model.parameters()) <= 0.5e6
    shapes = tap_channels(model, get_spec(name).default_taps, (3, 160, 160))
    assert [shape[1:] for shape in shapes.values()] == [(80, 80), (40, 40), (20, 20), (10, 10)]


def test_no_layer_runs_at_full_resolution() -> None:
    model = MobileUNet(1, 1, (8, 16, 32)).eval()
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    for hook in hooks:
        hook.remove()
    assert max(sizes) == 32


def test_separable_block_adds_its_input_only_when_shapes_match() -> None:
    same, wider, strided = SeparableBlock(8, 8), SeparableBlock(8, 16), SeparableBlock(8, 8, stride=2)
    assert same.residual and not wider.residual and not strided.residual
    x = torch.randn(2, 8, 16, 16)
    for block in (same, wider, strided):
        block.eval()
        nn.init.zeros_(block.pointwise.weight)  # the block's own branch is then zero
    assert torch.equal(same(x), x)
    assert torch.count_nonzero(wider(x)) == 0


@pytest.mark.parametrize(("kwargs", "problem"), [({"norm": "group"}, "norm must be one of"),
                                                 ({"channels": (16,)}, "at least two levels")])
def test_bad_arguments_are_named(kwargs, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        build_model("mobile-unet", **kwargs)


def test_a_fast_student_distils_from_a_unet_teacher_on_the_phantom(phantom_data, tmp_path, tiny_config):
    """Attention transfer from the U-Net teacher's taps into the fast student's, and its KL, lift the student."""
    teacher = tmp_path / "teacher"
    train_run(phantom_data, teacher, tiny_config(epochs=4, steps_per_epoch=15))
    config = tiny_config(epochs=6, steps_per_epoch=15)
    config.model.name = MOBILE[0]
    config.distill = DistillConfig(teachers=[str(teacher)], kl=1.0, feature=1000.0, feature_term="attention")
    train_run(phantom_data, tmp_path / "student", config)
    log = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert {"kl", "feature", "dice"} <= set(log[0]) and all(r["feature"] > 0 for r in log)
    assert max(r["val_dice"] for r in log) > 0.5
