"""Training augmentation: spatial transforms move image, label and cached teacher logits together; running with
MONAI's meta-data tracking off changes nothing but the speed and leaves the tracking flag as it was."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import get_track_meta
from monai.transforms import Compose

from prokd.config import AugmentConfig
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
