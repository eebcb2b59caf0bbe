"""Training augmentation: spatial transforms move image, label and cached teacher logits together; running with
MONAI's meta-data tracking off changes nothing but the speed and leaves the tracking flag as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import get_track_meta
from monai.transforms import Compose

from prokd.config import AugmentConfig, ConfigError
from prokd.data.augment import build_augmentation


def slice_item(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((1, 48, 48), dtype=np.float32)
    label[:, 14:30, 18:34] = 1.0
    return {"image": rng.random((1, 48, 48), dtype=np.float32), "label": label, "teacher": 8.0 * label - 4.0}


def test_untracked_augmentation_gives_the_tracked_values_as_plain_tensors():
    untracked = build_augmentation(AugmentConfig(affine_prob=1.0), 48)
    tracked = Compose(list(build_augmentation(AugmentConfig(affine_prob=1.0), 48).transforms))
    untracked.set_random_state(3)
    tracked.set_random_state(3)
    for _ in range(10):
        fast, slow = untracked(slice_item()), tracked(slice_item())
        for key in ("image", "label", "teacher"):
            assert type(fast[key]) is torch.Tensor
            assert torch.equal(fast[key], slow[key].as_tensor())
    assert get_track_meta(), "the process keeps MONAI's meta-data tracking on"


def test_spatial_transforms_keep_label_and_teacher_logits_aligned():
    augmentation = build_augmentation(AugmentConfig(affine_prob=1.0, intensity_prob=0.0), 48)
    augmentation.set_random_state(0)
    for _ in range(10):
        out = augmentation(slice_item())
        label, teacher = out["label"] > 0.5, out["teacher"] > 0.0
        overlap = 2 * (label & teacher).sum() / (label.sum() + teacher.sum())
        assert overlap > 0.9, "nearest-neighbour label and bilinear logits of one mask stay on each other"


def test_disabled_augmentation_is_none():
    assert build_augmentation(AugmentConfig(enabled=False), 48) is None


RING = torch.ones(48, 48, dtype=torch.bool)
RING[12:36, 12:36] = False  # around a 48² slice zoomed out to 24²


def zoomed_out(fill: str) -> dict[str, torch.Tensor]:
    """A slice zoomed out to half its size (no other transform), with ``zoom_fill=fill``."""
    config = AugmentConfig(zoom_range=(0.5, 0.5), zoom_fill=fill, flip_prob=0.0, rotate_degrees=0.0,
                           translate_fraction=0.0, affine_prob=1.0, intensity_prob=0.0, bias_field_prob=0.0,
                           noise_prob=0.0, contrast_prob=0.0)
    item = slice_item()
    item["image"] = 1.0 + item["image"]  # intensities in [1, 2): the darkest value is not 0
    item["label"][:] = 1.0  # a gland up to the border: only the fill can be background
    augmentation = build_augmentation(config, 48)
    augmentation.set_random_state(0)
    return augmentation(item)


def test_a_dark_zoom_puts_the_slice_in_empty_space():
    out = zoomed_out("dark")
    assert not out["label"][0][RING].any() and out["label"][0][~RING].all()
    assert out["image"][0][RING].mean() < out["image"][0][~RING].mean() - 0.2  # each row's darkest value
    assert out["teacher"][0][RING].max() <= -3.9


def test_an_edge_zoom_repeats_the_border():
    out = zoomed_out("edge")
    assert out["label"].all()
    assert abs(out["image"][0][RING].mean() - out["image"][0][~RING].mean()) < 0.1


def test_intensity_strength_widens_the_reach_of_the_intensity_transforms():
    def mean_offsets(strength: float) -> np.ndarray:
        config = AugmentConfig(affine_prob=0.0, flip_prob=0.0, intensity_prob=1.0, bias_field_prob=0.0,
                               noise_prob=0.0, contrast_prob=0.0, intensity_strength=strength)
        augment = build_augmentation(config, size=16)
        augment.set_random_state(seed=0)
        image = torch.ones(1, 16, 16)
        return np.array([float(augment({"image": image})["image"].mean()) - 1.0 for _ in range(300)])

    usual, strong = mean_offsets(1.0), mean_offsets(2.0)
    assert np.abs(usual).max() <= 0.2 + 0.2 + 1e-6  # scale by 1 ± 0.2, then shift by ± 0.2
    assert np.abs(strong).max() > 0.5 and np.abs(strong).max() <= 0.4 + 0.4 + 1e-6
    assert strong.std() > 1.5 * usual.std()
    with pytest.raises(ConfigError, match="augment.intensity_strength"):
        AugmentConfig(intensity_strength=0.0)
