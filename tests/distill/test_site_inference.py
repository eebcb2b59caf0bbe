"""Site inference on the phantom: per-site teachers place volumes they never saw at their site; a distillation
with ``infer_sites`` gives its unlabeled images without a site the inferred one and records it."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

import prokd.train.runner as runner
from prokd.config import ConfigError, DistillConfig
from prokd.data.datalist import UNKNOWN_SITE, CaseIndex, load_case, load_cases
from prokd.data.preprocess import Preprocessor
from prokd.data.slices import to_grid_case
from prokd.distill.site_inference import fit_site_centroids, infer_sites, teacher_site
from prokd.distill.teachers import load_teacher, teacher_runs, training_cases
from prokd.train.teachers import train_teachers


@pytest.fixture(scope="module")
def site_teachers(phantom_data, tmp_path_factory, tiny_config):
    """One briefly trained unet-tiny teacher per phantom site, each on the two training cases of its site (the
    third case of every site is in the shared validation split); the folder of their RUN folders."""
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.model.name = "unet-tiny"
    config.split.val_fraction, config.split.test_fraction = 0.25, 0.0
    folder = tmp_path_factory.mktemp("site-teachers") / "teachers"
    train_teachers(phantom_data, folder, config, by="site")
    return folder


def test_site_inference_places_unseen_phantom_volumes_at_their_site(phantom_data, site_teachers, tiny_config):
    index = load_cases(phantom_data)
    preprocessor = Preprocessor(tiny_config().preprocess)

    def on_grid(cases):
        return [to_grid_case(load_case(case), preprocessor) for case in cases]

    runs = teacher_runs([site_teachers])
    training_images = {teacher_site(run, index): on_grid(index.select(training_cases(run))) for run in runs}
    assert sorted(training_images) == index.sites() and all(len(images) == 2 for images in training_images.values())
    fitted = {case.case_id for images in training_images.values() for case in images}
    unseen = on_grid([case for case in [*index.labeled, *index.unlabeled] if case.case_id not in fitted])
    assert len(unseen) == 8  # one validation and one unlabeled volume per site

    guesses = infer_sites([load_teacher(run) for run in runs], training_images, unseen)
    correct = [case.case_id for case in unseen if guesses[case.case_id].site == case.site]
    assert len(correct) >= len(unseen) - 1, {case_id: guess.site for case_id, guess in guesses.items()}
    for guess in guesses.values():
        assert set(guess.distances) == set(training_images)
        assert guess.distance == min(guess.distances.values())
        assert guess.margin == pytest.approx(sorted(guess.distances.values())[1] - guess.distance)


def test_nearest_site_by_standardised_distance_hand_values():
    # Site A: volume means (1, 1) and (1, 1); its four slices spread by sqrt(0.5) on both dimensions. Site B: one
    # constant volume, spread 0, floored at 1 % of the mean spread (sqrt(0.5) / 2).
    centroids = fit_site_centroids({
        "A": [torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.ones(2, 2)],
        "B": [torch.tensor([[10.0, 5.0], [10.0, 5.0]])],
    })
    torch.testing.assert_close(centroids.centroids, torch.tensor([[1.0, 1.0], [10.0, 5.0]]))
    floor = 0.01 * math.sqrt(0.5) / 2
    torch.testing.assert_close(centroids.spreads, torch.tensor([[math.sqrt(0.5)] * 2, [floor] * 2]))
    guess = centroids.nearest(torch.tensor([2.0, 2.0]))
    far = math.sqrt((8**2 + 3**2) / 2) / floor
    assert guess.site == "A"
    assert guess.distance == pytest.approx(math.sqrt(2))
    assert guess.distances["B"] == pytest.approx(far, rel=1e-5)
    assert guess.margin == pytest.approx(far - math.sqrt(2), rel=1e-5)
    assert centroids.nearest(torch.tensor([10.0, 5.0])).site == "B"


def test_fitting_needs_volumes_of_two_sites():
    with pytest.raises(ValueError, match=r"at least two sites; got sites \['A'\]"):
        fit_site_centroids({"A": [torch.ones(2, 3)]})
    with pytest.raises(ValueError, match=r"without volumes for \['B'\]"):
        fit_site_centroids({"A": [torch.ones(2, 3)], "B": []})


def test_a_teacher_must_know_one_site(phantom_data, site_teachers):
    index = load_cases(phantom_data)
    run = site_teachers / "SiteB"
    assert teacher_site(run, index) == "SiteB"
    first, second = training_cases(run)
    mixed = relabeled(index, {first: "SiteA"})
    with pytest.raises(ConfigError) as caught:
        teacher_site(run, mixed)
    assert str(caught.value) == (f"distill.infer_sites needs teachers trained on one site each; teacher {run} was "
                                 "trained on cases of sites SiteA, SiteB")
    with pytest.raises(ConfigError, match="was trained on cases without a site$"):
        teacher_site(run, relabeled(index, {first: UNKNOWN_SITE, second: UNKNOWN_SITE}))


def relabeled(index: CaseIndex, sites: dict[str, str]) -> CaseIndex:
    """``index`` with the labeled cases named in ``sites`` moved to the given sites."""
    labeled = [replace(case, site=sites.get(case.case_id, case.site)) for case in index.labeled]
    return CaseIndex(index.root, labeled, index.unlabeled, index.test)


def test_distillation_infers_and_records_the_sites_of_unlabeled_images_without_one(
    phantom_data, site_teachers, tmp_path, tiny_config, monkeypatch
):
    # Two of the four site teachers keep the run short: the unlabeled images of their sites must get those sites,
    # those of the other two sites one of them.
    teachers = [site_teachers / "SiteA", site_teachers / "SiteB"]
    datalist = without_unlabeled_sites(phantom_data, tmp_path / "no-sites.json")
    sampled, make_sampler = {}, runner.make_sampler

    def recording_sampler(prepared, context=None, unlabeled=None, teacher_maps=None):
        sampled.update({case.case_id: case.site for case in unlabeled})
        return make_sampler(prepared, context=context, unlabeled=unlabeled, teacher_maps=teacher_maps)

    monkeypatch.setattr(runner, "make_sampler", recording_sampler)
    config = tiny_config(epochs=1, steps_per_epoch=2)
    config.model.name = "unet-tiny"
    config.distill = DistillConfig(teachers=[str(t) for t in teachers], aggregate="site", unlabeled_fraction=0.25,
                                   infer_sites=True)
    split = json.loads((site_teachers / "teachers.json").read_text())["split"]
    output = io.StringIO()
    runner.train_run(datalist, tmp_path / "student", config, split=split, console=Console(file=output, width=200))

    record = json.loads((tmp_path / "student" / "inferred_sites.json").read_text())
    assert record["teacher_sites"] == {str(t): t.name for t in teachers}
    unlabeled = {case.case_id: case.site for case in load_cases(phantom_data).unlabeled}
    assert sorted(record["cases"]) == sorted(unlabeled)
    inferred = {case_id: guess["site"] for case_id, guess in record["cases"].items()}
    assert sampled == inferred  # the sampler, hence the batches' sites, got them
    assert {case_id: inferred[case_id] for case_id, site in unlabeled.items() if site in ("SiteA", "SiteB")} == {
        case_id: site for case_id, site in unlabeled.items() if site in ("SiteA", "SiteB")
    }
    assert set(inferred.values()) <= {"SiteA", "SiteB"}
    for guess in record["cases"].values():
        assert guess["distance"] == min(guess["distances"].values()) and guess["margin"] >= 0
    assert "inferred the site of 4 unlabeled images without one: " in output.getvalue()


def without_unlabeled_sites(datalist: Path, out: Path) -> Path:
    """A copy of ``datalist`` at ``out`` (absolute paths) whose unlabeled entries name no site."""
    data = json.loads(datalist.read_text())
    root = datalist.parent
    training = [{**entry, "image": str(root / entry["image"]), "label": str(root / entry["label"])}
                for entry in data["training"]]
    unlabeled = [{"case": entry["case"], "image": str(root / entry["image"])} for entry in data["unlabeled"]]
    out.write_text(json.dumps({"training": training, "unlabeled": unlabeled}))
    return out
