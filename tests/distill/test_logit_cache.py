"""The teachers' logit cache: equal to a fresh forward pass, computed once per teacher and case across caches
(on disk beside the checkpoint), recomputed when the checkpoint or the image changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from prokd.config import PreprocessConfig
from prokd.data.datalist import Case, load_case, load_cases
from prokd.data.preprocess import GridPlan, Preprocessor
from prokd.data.slices import GridCase, context_stack, to_grid_case
from prokd.distill.logit_cache import CACHE_FOLDER, TeacherLogitCache, case_digest
from prokd.distill.teachers import Teacher
from tests.distill.test_objective import make_teacher


def grid_case(seed: int = 0, case_id: str = "c0") -> GridCase:
    plan = GridPlan(volume_shape=(5, 32, 32), crop_box=(0, 32, 0, 32), resampled_shape=(32, 32), offset=(0, 0), size=32)
    image = np.random.default_rng(seed).standard_normal((5, 32, 32)).astype(np.float32)
    return GridCase(case_id, "SiteA", image, np.zeros((5, 32, 32), np.uint8), plan)


def teacher_with_checkpoint(tmp_path: Path, name: str, seed: int, content: bytes = b"weights") -> Teacher:
    checkpoint = tmp_path / name / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(content)
    return dataclasses.replace(make_teacher(seed=seed), checkpoint=checkpoint)


def count_samples(teacher: Teacher) -> list[int]:
    calls: list[int] = []
    teacher.model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


def test_cached_logits_equal_a_fresh_forward_pass_per_slice(tmp_path):
    teachers = [teacher_with_checkpoint(tmp_path, "a", 0), make_teacher("unet-tiny", seed=1)]
    case = grid_case()
    cache = TeacherLogitCache(teachers, context=1, chunk=2)
    for z in range(5):
        x = torch.from_numpy(context_stack(case.image, z, 1))[None]
        fresh = torch.cat([teacher(x)[0][0] for teacher in teachers]).numpy()
        np.testing.assert_allclose(cache(case, z), fresh, rtol=1e-5, atol=1e-5)
    assert cache(case, 0).shape == (2, 32, 32)


def test_a_second_cache_reads_the_first_ones_files(tmp_path):
    case = grid_case()
    first = teacher_with_checkpoint(tmp_path, "a", 0)
    calls = count_samples(first)
    expected = TeacherLogitCache([first], context=0)(case, 3)
    assert sum(calls) == 5
    files = list((tmp_path / "a" / "checkpoints" / CACHE_FOLDER).glob("*/*.npy"))
    assert len(files) == 1 and np.load(files[0]).shape == (5, 1, 32, 32)
    again = TeacherLogitCache([first], context=0)
    np.testing.assert_array_equal(again(case, 3), expected)
    assert sum(calls) == 5, "served from disk: no teacher forward pass"
    TeacherLogitCache([first], context=0)(grid_case(seed=1), 0)
    assert sum(calls) == 10, "another image misses the cache"


def test_a_new_checkpoint_replaces_the_stale_cache(tmp_path):
    case = grid_case()
    teacher = teacher_with_checkpoint(tmp_path, "a", 0)
    TeacherLogitCache([teacher], context=0)(case, 0)
    root = tmp_path / "a" / "checkpoints" / CACHE_FOLDER
    old = {p.name for p in root.iterdir()}
    teacher.checkpoint.write_bytes(b"retrained weights")
    calls = count_samples(teacher)
    TeacherLogitCache([teacher], context=0)(case, 0)
    assert sum(calls) == 5
    new = {p.name for p in root.iterdir()}
    assert len(new) == 1 and new != old


def test_teacher_without_checkpoint_is_cached_in_memory_only(tmp_path):
    teacher = make_teacher()
    calls = count_samples(teacher)
    cache = TeacherLogitCache([teacher], context=0)
    for z in range(5):
        cache(grid_case(), z)
    assert sum(calls) == 5
    with pytest.warns(UserWarning, match="in memory only"):
        blocked = teacher_with_checkpoint(tmp_path, "b", 0)
        (blocked.checkpoint.parent / CACHE_FOLDER).write_text("not a folder")
        TeacherLogitCache([blocked], context=0)(grid_case(), 0)


def test_a_case_stored_in_another_axis_order_has_the_same_digest(phantom_data, reoriented, tmp_path):
    """Cases are read in the canonical orientation, so the cache entry does not depend on how a file stores them."""
    original = load_cases(phantom_data).labeled[0]
    image, label = reoriented(original.image, tmp_path / "i.mha"), reoriented(original.label, tmp_path / "l.mha")
    permuted = Case(original.case_id, image, label)
    preprocessor = Preprocessor(PreprocessConfig(size=64, target_spacing=2.5))
    digests = {case_digest(to_grid_case(load_case(case), preprocessor)) for case in (original, permuted)}
    assert len(digests) == 1
