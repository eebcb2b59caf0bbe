"""Uncertainty at prediction time: entropy and disagreement maps in the input's geometry, per-volume scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from prokd.config import PostprocessConfig, PreprocessConfig
from prokd.data.io import read_volume
from prokd.infer.predict import Predictor, output_paths, predict_file
from prokd.infer.uncertainty import binary_entropy, disagreement, disagreement_score, entropy_score, teacher_runs


class Scaled(nn.Module):
    """Logit = the centre channel's (normalised) intensity times ``gain``: a low gain is an unsure network."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x.shape[1] // 2
        return (x[:, centre : centre + 1] - 0.5) * self.gain


def test_entropy_is_zero_when_sure_and_one_bit_at_one_half():
    np.testing.assert_allclose(binary_entropy(np.array([0.0, 1.0, 0.5])), [0.0, 0.0, 1.0], atol=1e-5)
    assert binary_entropy(np.array([0.1])) == pytest.approx(binary_entropy(np.array([0.9])))


def test_an_unsure_network_scores_higher_than_a_sure_one():
    image = np.full((6, 40, 48), 10.0, dtype=np.float32)
    image[1:5, 10:30, 12:36] = 100.0
    image += np.random.default_rng(0).normal(0, 5, image.shape).astype(np.float32)
    scores = []
    for gain in (20.0, 2.0):
        prediction = Predictor(Scaled(gain), PreprocessConfig(size=32)).predict(image, None)
        scores.append(entropy_score(prediction.probability, binary_entropy(prediction.probability)))
    assert 0 < scores[0] < scores[1] / 3


def test_the_score_averages_over_the_possible_gland_only():
    """A larger field of view (more background, each voxel with a tiny entropy) leaves the score unchanged."""
    gland = np.array([0.99, 0.9, 0.6, 0.3, 0.05], dtype=np.float32)
    background = np.full(1000, 0.01, dtype=np.float32)
    small, large = gland, np.concatenate([gland, background])
    assert entropy_score(small, binary_entropy(small)) == pytest.approx(binary_entropy(gland).mean(), rel=1e-6)
    assert entropy_score(large, binary_entropy(large)) == pytest.approx(entropy_score(small, binary_entropy(small)))
    assert entropy_score(background, binary_entropy(background)) == 0.0


def test_disagreement_is_zero_for_agreeing_teachers_and_grows_with_their_spread():
    same = [np.full((2, 3, 3), 0.8, dtype=np.float32)] * 3
    assert disagreement(same).max() == 0 and disagreement_score(same, disagreement(same)) == 0
    apart = [np.full((2, 3, 3), p, dtype=np.float32) for p in (0.2, 0.8)]
    assert disagreement(apart) == pytest.approx(np.full((2, 3, 3), 0.3))
    assert disagreement_score(apart, disagreement(apart)) == pytest.approx(0.3)


def test_maps_are_written_in_the_input_geometry_with_scores(phantom_data, reoriented, tmp_path):
    original = read_volume(phantom_data.parent / json.loads(phantom_data.read_text())["training"][0]["image"])
    from prokd.data.io import write_volume

    source = reoriented(write_volume(tmp_path / "scan.nii.gz", *original), tmp_path / "scan.mha")
    preprocess = PreprocessConfig(size=64, target_spacing=2.5)
    student = Predictor(Scaled(4.0), preprocess, PostprocessConfig(largest_component=False))
    teachers = [Predictor(Scaled(gain), preprocess) for gain in (1.0, 8.0)]
    written = predict_file(student, source, tmp_path / "out", uncertainty=True, teachers=teachers)
    paths = output_paths(source, tmp_path / "out")
    stored = sitk.ReadImage(str(source))
    for name in ("mask", "entropy", "disagreement"):
        image = sitk.ReadImage(str(paths[name]))
        assert image.GetSize() == stored.GetSize() and image.GetDirection() == stored.GetDirection()
        assert image.GetSpacing() == stored.GetSpacing() and image.GetOrigin() == stored.GetOrigin()
    entropy = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["entropy"])))
    assert entropy.dtype == np.float32 and 0 <= entropy.min() and entropy.max() <= 1
    assert written.uncertainty > 0 and written.disagreement > 0
    assert not paths["prob"].exists()


def test_a_missing_teacher_is_named(tmp_path):
    run = tmp_path / "student"
    run.mkdir()
    (run / "teachers.json").write_text(json.dumps([{"run": str(tmp_path / "gone")}]))
    with pytest.raises(FileNotFoundError, match="gone: teacher of"):
        teacher_runs(run)
    assert teacher_runs(tmp_path) == []
