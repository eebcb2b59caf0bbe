"""The weak-to-strong consistency term: what it measures and where, its place in the
distillation objective, its config keys, and a short distillation with it that resumes exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from prokd.config import ConfigError, DistillConfig, PreprocessConfig, RunConfig
from prokd.data.photometric import PhotometricPerturbation
from prokd.data.preprocess import GridPlan
from prokd.data.slices import Batch, GridCase, SliceSampler
from prokd.distill.consistency import ConsistencyLoss
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import Teacher
from prokd.losses import SegmentationLoss
from prokd.models import build_model, get_spec
from prokd.train.runner import train_run

PRE = PreprocessConfig(size=32)
NO_CUTOUT = PhotometricPerturbation(cutout=0.0)


class FixedLogits(nn.Module):
    """A network whose (1, H, W) logits ignore the image; records the batch size of each call."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        return self.logits.expand(len(x), -1, -1, -1)


def bernoulli_kl_by_hand(p: float, logit: float) -> float:
    q = 1 / (1 + math.exp(-logit))
    return sum(a * math.log(a / b) for a, b in ((p, q), (1 - p, 1 - q)) if a > 0)


def test_zero_when_both_views_give_the_same_prediction():
    logits = torch.full((1, 8, 8), 4.0)
    logits[:, :, :4] = -4.0
    model = FixedLogits(logits)
    x = torch.randn(3, 1, 8, 8)
    target = torch.sigmoid(logits).expand(3, 1, 8, 8)
    loss, share = ConsistencyLoss()(model, x, target, torch.tensor([False, True, True]))
    assert share >= 1 - 0.4**2, "every pixel confident but those cut out (at most 0.4² of the slice)"
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert model.batch_sizes == [2], "one forward pass, on the unlabeled slices only"


def test_positive_when_the_strong_view_changes_the_prediction_and_no_gradient_reaches_the_target():
    model = nn.Conv2d(1, 1, 1)
    nn.init.constant_(model.weight, 3.0)
    nn.init.zeros_(model.bias)
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    weak_logits = model(x).detach().requires_grad_(True)
    loss, share = ConsistencyLoss(threshold=0.6)(model, x, torch.sigmoid(weak_logits), torch.tensor([True, True]))
    loss.backward()
    assert share > 0 and loss.item() > 0.01
    assert weak_logits.grad is None, "the target is a constant"
    assert model.weight.grad.abs().item() > 0, "the strong view's prediction is trained"


def test_only_confident_pixels_count_and_the_share_matches_a_hand_count():
    values = torch.linspace(0.0, 1.0, 64)
    target = values.reshape(1, 1, 8, 8).expand(3, 1, 8, 8)
    model = FixedLogits(torch.full((1, 8, 8), 1.0))
    loss, share = ConsistencyLoss(threshold=0.9, perturbation=NO_CUTOUT)(
        model, torch.randn(3, 1, 8, 8), target, torch.tensor([True, False, True])
    )
    confident = [v for v in values.tolist() if v > 0.9 or v < 0.1]
    assert len(confident) == 14
    assert share == pytest.approx(len(confident) / 64)
    expected = sum(bernoulli_kl_by_hand(p, 1.0) for p in confident) / len(confident)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_no_unlabeled_slice_means_no_term_and_no_forward_pass():
    model = FixedLogits(torch.zeros(1, 8, 8))
    found = ConsistencyLoss()(model, torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.tensor([False, False]))
    assert found is None and model.batch_sizes == []


def test_invalid_thresholds_are_refused():
    with pytest.raises(ValueError, match=r"threshold must be in \[0.5, 1\)"):
        ConsistencyLoss(threshold=1.0)


@pytest.mark.parametrize(
    "distill, message",
    [
        ({"consistency": -1.0, "unlabeled_fraction": 0.25}, "term weights must be >= 0"),
        ({"consistency": 1.0}, r"'distill.consistency' applies to unlabeled slices only"),
        ({"consistency_threshold": 0.4}, "'distill.consistency_threshold' must be in"),
        ({"consistency_threshold": 1.0}, "'distill.consistency_threshold' must be in"),
        ({"consistency_target": "ema"}, "'distill.consistency_target' must be student or teachers"),
    ],
)
def test_config_errors_name_the_key(distill, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({"distill": distill})


def make_teacher() -> Teacher:
    torch.manual_seed(0)
    model = build_model("unet-tiny", 1, 1).eval().requires_grad_(False)
    return Teacher("unet-tiny", model, PRE, get_spec("unet-tiny").default_taps, score=0.8, out_channels=1)


def objective_for(student: nn.Module, teacher: Teacher, **config) -> DistillationObjective:
    return DistillationObjective(
        student, get_spec("unet-tiny").default_taps, PRE, [teacher], SegmentationLoss(), DistillConfig(**config)
    )


def mixed_batch() -> Batch:
    torch.manual_seed(1)
    y = torch.zeros(3, 1, 32, 32)
    y[0, :, 8:24, 8:24] = 1
    return Batch(torch.randn(3, 1, 32, 32), y, torch.tensor([True, False, False]))


def test_objective_adds_the_weighted_term_and_forwards_only_the_unlabeled_strong_views():
    teacher, student = make_teacher(), build_model("unet-tiny", 1, 1)
    without = objective_for(student, teacher)
    with_term = objective_for(student, teacher, consistency=2.0, consistency_threshold=0.5, unlabeled_fraction=0.25)
    sizes: list[int] = []
    student.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    base, _ = without(student, mixed_batch())
    loss, terms = with_term(student, mixed_batch())
    assert sizes == [3, 3, 2]
    assert terms["consistency"] > 0 and 1 - 0.4**2 <= terms["consistency_mask"] <= 1  # threshold 0.5: all but the cutout
    assert loss.item() == pytest.approx(base.item() + 2.0 * terms["consistency"], rel=1e-5)
    labeled = mixed_batch()
    labeled.labeled[:] = True
    sizes.clear()
    loss, terms = with_term(student, labeled)
    assert sizes == [3] and "consistency" not in terms
    assert loss.item() == without(student, labeled)[0].item()


@pytest.mark.parametrize("source", ["student", "teachers"])
def test_target_is_the_students_weak_view_or_the_aggregated_teachers(source):
    teacher, student = make_teacher(), build_model("unet-tiny", 1, 1)
    objective = objective_for(student, teacher, consistency=1.0, consistency_target=source, unlabeled_fraction=0.25)
    targets = []
    objective.consistency_loss.register_forward_hook(lambda module, args, output: targets.append(args[2]))
    batch = mixed_batch()
    objective(student, batch)
    network = student if source == "student" else teacher.model
    torch.testing.assert_close(targets[0], torch.sigmoid(network(batch.x)))


def test_cached_and_fresh_teacher_logits_give_the_same_term():
    plan = GridPlan(volume_shape=(6, 32, 32), crop_box=(0, 32, 0, 32), resampled_shape=(32, 32), offset=(0, 0), size=32)
    torch.manual_seed(2)
    label = np.zeros((6, 32, 32), dtype=np.uint8)
    label[:, 8:24, 8:24] = 1
    labeled = GridCase("c0", "SiteA", torch.randn(6, 32, 32).numpy(), label, plan)
    unlabeled = GridCase("u0", "SiteA", torch.randn(6, 32, 32).numpy(), None, plan)
    teacher, student = make_teacher(), build_model("unet-tiny", 1, 1)
    config = {"consistency": 1.0, "consistency_target": "teachers", "consistency_threshold": 0.5,
              "unlabeled_fraction": 0.5}
    fresh, cached = objective_for(student, teacher, **config), objective_for(student, teacher, cache_teachers=True, **config)
    sampler = SliceSampler([labeled], batch_size=8, unlabeled=[unlabeled], unlabeled_fraction=0.5,
                           teacher_maps=cached.teacher_logits)
    batch = sampler.batch(sampler.seed(0))
    assert 0 < int((~batch.labeled).sum()) < 8
    torch.manual_seed(3)
    _, from_cache = cached(student, batch)
    torch.manual_seed(3)
    _, from_teacher = fresh(student, Batch(batch.x, batch.y, batch.labeled, batch.keys))
    assert from_cache["consistency"] > 0
    assert from_cache["consistency"] == pytest.approx(from_teacher["consistency"], rel=1e-5)


@pytest.fixture(scope="module")
def quick_teacher(phantom_data, tmp_path_factory, tiny_config):
    run = tmp_path_factory.mktemp("teacher") / "run"
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.model.name = "unet-tiny"
    train_run(phantom_data, run, config)
    return run


def test_distillation_with_the_term_logs_it_and_resumes_exactly(
    phantom_data, quick_teacher, tmp_path, tiny_config, check_resume
):
    config = tiny_config(epochs=2, steps_per_epoch=2)
    config.model.name = "unet-tiny"
    config.augment.enabled = True
    config.distill = DistillConfig(teachers=[str(quick_teacher)], cache_teachers=True, unlabeled_fraction=0.5,
                                   consistency=1.0, consistency_threshold=0.5)
    check_resume(phantom_data, tmp_path, config, stop_after=1)
    log = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(record["consistency"] > 0 and 0 < record["consistency_mask"] <= 1 for record in log)
