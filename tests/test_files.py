"""Atomic writes: the target is replaced whole or not at all, and the temporary file is recognisable."""

from __future__ import annotations

import pytest

from prokd.files import atomic_write, atomic_write_text, temporary_of, temporary_path


def test_a_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "last.pt"
    atomic_write_text(target, "complete")

    def half_then_fail(handle):
        handle.write(b"half")
        raise KeyboardInterrupt  # as a kill would interrupt it

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_the_temporary_is_empty_beside_its_target_and_names_it(tmp_path):
    tmp = temporary_path(tmp_path / "new" / "last.pt")
    assert tmp.parent == tmp_path / "new" and tmp.is_file() and tmp.stat().st_size == 0
    assert temporary_of(tmp.name) == "last.pt"
    assert temporary_of("last.pt") is None
    assert temporary_of(".last.pt.tmp") is None
    assert temporary_of(".notes.txt.ABCDEFGH.tmp") is None  # mkstemp's characters are lower case
