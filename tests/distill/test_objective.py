"""The distillation objective: zero when the student is the teacher, gradients only where they belong,
heterogeneous teacher/student pairs, several teachers, teachers kept out of the state dict."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from prokd.config import DistillConfig, PreprocessConfig
from prokd.data.preprocess import GridPlan
from prokd.data.slices import Batch, GridCase, SliceSampler
from prokd.distill.objective import DistillationObjective
from prokd.distill.teachers import Teacher, centre_channels, check_compatible
from prokd.losses import SegmentationLoss
from prokd.models import build_model, get_spec

PRE = PreprocessConfig(size=32)


def make_teacher(name: str = "unet-small", seed: int = 0, preprocess: PreprocessConfig = PRE) -> Teacher:
    torch.manual_seed(seed)
    model = build_model(name, preprocess.in_channels, 1).eval().requires_grad_(False)
    return Teacher(name, model, preprocess, get_spec(name).default_taps, score=0.8, out_channels=1)


def batch(labeled: bool = False, channels: int = 1) -> Batch:
    torch.manual_seed(1)
    y = torch.zeros(2, 1, 32, 32)
    y[:, :, 8:24, 8:24] = 1
    return Batch(torch.randn(2, channels, 32, 32), y, torch.tensor([labeled, labeled]))


def objective_for(student, teachers, **config) -> DistillationObjective:
    return DistillationObjective(
        student, get_spec("unet-small").default_taps, PRE, teachers, SegmentationLoss(), DistillConfig(**config)
    )


def test_zero_distillation_loss_when_student_is_the_teacher():
    teacher = make_teacher()
    student = copy.deepcopy(teacher.model).train().requires_grad_(True)
    objective = objective_for(student, [teacher], kl=1.0, feature=1.0, feature_term="attention")
    loss, terms = objective(student, batch())
    assert set(terms) == {"kl", "feature"}
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_student_and_adapters_only():
    teacher = make_teacher("unet-large")
    student = build_model("unet-small", 1, 1)
    objective = objective_for(student, [teacher], kl=1.0, feature=1.0, feature_term="hint")
    loss, terms = objective(student, batch(labeled=True))
    assert {"dice", "lovasz", "ce", "kl", "feature"} <= set(terms)
    loss.backward()
    assert all(p.grad is None for p in teacher.model.parameters())
    assert all(p.grad is not None for p in student.parameters())
    adapters = list(objective.feature_terms.parameters())
    assert adapters and all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters)
    assert not any(key.startswith("_teachers") for key in objective.state_dict())
    assert all(not t.model.training for t in objective.teachers)
    objective.train()
    assert all(not t.model.training for t in objective.teachers)


@pytest.mark.parametrize("teacher_name", ["attention-unet", "segresnet"])
def test_non_unet_teacher_to_unet_student(teacher_name):
    student = build_model("unet-small", 1, 1)
    objective = objective_for(student, [make_teacher(teacher_name)], feature=1.0, feature_term="hint")
    loss, _ = objective(student, batch())
    assert torch.isfinite(loss) and loss.item() > 0


def test_teacher_with_other_size_and_context():
    big = PreprocessConfig(size=64, context=1)
    teacher = make_teacher("unet-small", preprocess=big)
    student = build_model("unet-small", 1, 1)
    objective = objective_for(student, [teacher], feature=1.0, feature_term="attention")
    assert objective.context == 1
    loss, terms = objective(student, batch(channels=3))
    assert torch.isfinite(loss) and {"kl", "feature"} <= set(terms)


@pytest.mark.parametrize("mode", ["mean", "weighted", "site", "adaptive", "learned"])
def test_several_teachers_every_aggregation(mode):
    teachers = [make_teacher(seed=s) for s in range(3)]
    for teacher in teachers:
        teacher.site_scores = {"SiteA": 0.5}
    student = build_model("unet-tiny", 1, 1)
    objective = objective_for(student, teachers, aggregate=mode, feature=0.5, feature_term="affinity")
    loss, terms = objective(student, batch(labeled=True))
    loss.backward()
    assert ("gate" in terms) == (mode == "learned")
    assert len(objective.feature_terms) == 3


def test_site_aggregation_uses_each_teacher_score_on_the_batch_sites():
    teachers = [make_teacher(seed=s) for s in range(2)]
    student = build_model("unet-tiny", 1, 1)
    with pytest.raises(ValueError, match=r"validation scores per site for every teacher; none for \['unet-small'"):
        objective_for(student, teachers, aggregate="site")
    teachers[0].site_scores = {"SiteA": 0.9, "SiteB": 0.1}
    teachers[1].site_scores = {"SiteA": 0.3}  # no score on SiteB: its overall score (0.8) stands in
    objective = objective_for(student, teachers, aggregate="site", aggregate_kwargs={"power": 1.0})
    assert objective.aggregator.sites == ["SiteA", "SiteB"]
    torch.testing.assert_close(objective.aggregator.site_share[:2], torch.tensor([[0.75, 0.25], [0.1 / 0.9, 0.8 / 0.9]]))
    sited = batch()
    sited.sites = ("SiteA", "SiteB")
    seen = []
    objective.aggregator.register_forward_hook(lambda module, args, result: seen.append(result.weights))
    objective(student, sited)
    torch.testing.assert_close(seen[0][0, :, 0, 0, 0], torch.tensor([0.75, 0.1 / 0.9]))


def test_restriction_to_uncertain_pixels_changes_the_kl():
    teacher = make_teacher()
    student = build_model("unet-tiny", 1, 1)
    everywhere = objective_for(student, [teacher])(student, batch())[1]["kl"]
    uncertain = objective_for(student, [teacher], restrict="uncertain")(student, batch())[1]["kl"]
    boundary = objective_for(student, [teacher], restrict="boundary")(student, batch())[1]["kl"]
    assert everywhere > 0 and uncertain != everywhere and boundary >= 0


def test_incompatible_teacher_is_rejected():
    teacher = make_teacher(preprocess=PreprocessConfig(size=32, crop_fraction=0.5))
    with pytest.raises(ValueError, match="field of view"):
        check_compatible(PRE, teacher)
    on_adc = make_teacher(preprocess=dataclasses.replace(PRE, channel=1))
    with pytest.raises(ValueError, match="channel"):
        check_compatible(PRE, on_adc)
    check_compatible(dataclasses.replace(PRE, channel=0), make_teacher(preprocess=PRE))  # 3D data is channel 0
    with pytest.raises(ValueError, match="need 3 context channels"):
        centre_channels(torch.zeros(1, 1, 4, 4), 3)


def test_cached_teacher_logits_equal_fresh_ones_and_run_once_per_slice():
    plan = GridPlan(volume_shape=(6, 32, 32), crop_box=(0, 32, 0, 32), resampled_shape=(32, 32), offset=(0, 0), size=32)
    torch.manual_seed(2)
    label = np.zeros((6, 32, 32), dtype=np.uint8)
    label[:, 8:24, 8:24] = 1
    case = GridCase("c0", "SiteA", torch.randn(6, 32, 32).numpy(), label, plan)
    teachers = [make_teacher(), make_teacher("unet-tiny", seed=1)]
    student = build_model("unet-tiny", 1, 1)
    fresh = objective_for(student, teachers)
    cached = objective_for(student, teachers, cache_teachers=True)
    calls = []
    hook = teachers[0].model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    sampler = SliceSampler([case], batch_size=16, teacher_maps=cached.teacher_logits)
    drawn = [sampler.batch(sampler.seed(seed)) for seed in (0, 1)]
    losses = [cached(student, batch)[0].item() for batch in drawn]
    hook.remove()
    assert sum(calls) == len(case.image), "each slice of the case through the teacher once"
    for batch, loss in zip(drawn, losses):
        assert batch.teacher.shape == (16, 2, 32, 32)
        plain = Batch(batch.x, batch.y, batch.labeled, batch.keys)
        assert loss == pytest.approx(fresh(student, plain)[0].item(), rel=1e-5)


def test_pseudo_label_term_is_the_segmentation_loss_against_the_teacher_mask_on_unlabeled_slices():
    teacher = make_teacher()
    student = build_model("unet-small", 1, 1)
    objective = objective_for(student, [teacher], kl=0.0, pseudo=2.0)
    mixed = batch()
    mixed = Batch(mixed.x, mixed.y, torch.tensor([True, False]))
    loss, terms = objective(student, mixed)
    logits = student(mixed.x)
    teacher_mask = torch.sigmoid(teacher.model(mixed.x)) > 0.5
    supervised, _ = SegmentationLoss()(logits[:1], mixed.y[:1])
    pseudo, _ = SegmentationLoss()(logits[1:], teacher_mask[1:])
    assert terms["pseudo"] == pytest.approx(pseudo.item(), rel=1e-5)
    assert loss.item() == pytest.approx(supervised.item() + 2.0 * pseudo.item(), rel=1e-5)
    _, labeled_only = objective(student, batch(labeled=True))
    assert "pseudo" not in labeled_only


def test_pseudo_label_term_can_skip_unlabeled_slices_whose_teacher_mask_is_empty(monkeypatch):
    student = build_model("unet-small", 1, 1)
    torch.manual_seed(2)
    three = Batch(torch.randn(3, 1, 32, 32), torch.zeros(3, 1, 32, 32), torch.tensor([True, False, False]))
    teachers_mask = torch.zeros(3, 1, 32, 32)
    teachers_mask[1, :, 8:24, 8:24] = 1.0  # unlabeled slice 1: the teachers see the gland; slice 2: nothing
    logits = student(three.x)
    objective = None
    for foreground_only, taught in ((False, [1, 2]), (True, [1])):
        objective = objective_for(student, [make_teacher()], kl=0.0, pseudo=1.0,
                                  pseudo_foreground_only=foreground_only)
        monkeypatch.setattr(objective, "_plain_aggregate", lambda outputs, result: teachers_mask)
        _, terms = objective(student, three)
        expected, _ = SegmentationLoss()(logits[taught], teachers_mask[taught] > 0.5)
        assert terms["pseudo"] == pytest.approx(expected.item(), rel=1e-5)
    only_empty = Batch(three.x, three.y, torch.tensor([True, True, False]))
    _, terms = objective(student, only_empty)
    assert "pseudo" not in terms, "no unlabeled slice with foreground: no pseudo-label term"


def test_joint_pseudo_labels_join_the_labeled_slices_in_one_segmentation_loss(monkeypatch):
    student = build_model("unet-small", 1, 1)
    torch.manual_seed(3)
    labels = torch.zeros(3, 1, 32, 32)
    labels[0, :, 4:12, 4:12] = 1.0
    three = Batch(torch.randn(3, 1, 32, 32), labels, torch.tensor([True, False, False]))
    teachers_mask = torch.zeros(3, 1, 32, 32)
    teachers_mask[:2, :, 8:24, 8:24] = 1.0  # the teachers' mask on the labeled slice must not replace its label
    objective = objective_for(student, [make_teacher()], kl=0.0, pseudo=1.0, pseudo_joint=True,
                              pseudo_foreground_only=True)
    monkeypatch.setattr(objective, "_plain_aggregate", lambda outputs, result: teachers_mask)
    loss, terms = objective(student, three)
    logits = student(three.x)
    joint_target = torch.stack([labels[0], teachers_mask[1]])
    expected, _ = SegmentationLoss()(logits[:2], joint_target)
    separate = SegmentationLoss()(logits[:1], labels[:1])[0] + SegmentationLoss()(logits[1:2], teachers_mask[1:2])[0]
    assert "pseudo" not in terms
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(separate.item(), rel=1e-3)


def test_a_calibrated_teacher_teaches_its_logits_divided_by_its_temperature():
    """A student equal to its teacher has zero KL; once the teacher is calibrated with T = 2 the student must
    match the teacher's logits halved, so the KL is no longer zero but is zero for the halved student."""
    teacher = make_teacher()
    student = copy.deepcopy(teacher.model)
    objective = objective_for(student, [teacher], kl=1.0)
    assert objective(student, batch())[1]["kl"] == pytest.approx(0.0, abs=1e-6)
    teacher.temperature = 2.0
    assert objective(student, batch())[1]["kl"] > 1e-4
    assert objective(Halved(student), batch())[1]["kl"] == pytest.approx(0.0, abs=1e-6)


class Halved(torch.nn.Module):
    """A network's logits divided by 2."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x) / 2
