"""The RUN folder: creation rules (never overwrite silently), environment record, JSON helpers.

Layout (see docs/architecture.md)::

    RUN/config.yaml  split.json  env.json  metrics.jsonl  checkpoints/{last,best}.pt  eval/

Every file is written by :func:`~prokd.files.atomic_write`; what a killed write leaves behind (a temporary file
named by :data:`~prokd.files.TEMPORARY`) is removed when the run is resumed (:func:`remove_temporaries`), and
does not make a folder unknown to ``--overwrite``.

``--overwrite`` deletes only a folder that proves to be prokd's own (:class:`FolderKind`: a RUN folder here, a
teachers, experiment or demo folder beside their commands), and only at the last moment, once the new command's
inputs and options are validated (:func:`prepare_run_dir`, :func:`delete_for_overwrite`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

import prokd
from prokd.files import atomic_write_text, temporary_of


class RunDirError(ValueError):
    """A RUN folder cannot be used as asked; the message names the folder."""


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder a prokd command writes, and the rule by which ``--overwrite`` knows one as prokd's own.

    A folder is of this kind when it holds every path of ``markers`` (the files its command writes first) and, at
    its top level, nothing but the markers' first parts, the names in ``optional`` and, with ``listed_in``, the
    stem of each ``*.json`` file in that sub-folder (``splits/<teacher>.json`` names the teacher's RUN folder).

    Attributes:
        name: the kind as error messages name it, e.g. ``"prokd run folder"``.
        remedy: what a refused non-empty folder's message suggests without ``--overwrite``.
    """

    name: str
    markers: tuple[str, ...]
    optional: tuple[str, ...] = ()
    listed_in: str | None = None
    remedy: str = "use --overwrite to replace it, or another --out"

    def mismatch(self, folder: Path) -> str | None:
        """Why the existing ``folder`` is not of this kind (``"it holds thesis.txt"``), or None when it is."""
        if folder.is_symlink():
            return f"it is a symbolic link to {os.readlink(folder)}; give the folder itself"
        if not folder.is_dir():
            return "it is a file"
        expected = {Path(marker).parts[0] for marker in self.markers} | set(self.optional) | SYSTEM_FILES
        if self.listed_in:
            expected |= {listing.stem for listing in (folder / self.listed_in).glob("*.json")}
        unexpected = sorted(
            entry.name for entry in folder.iterdir() if entry.name not in expected and temporary_of(entry.name) not in expected
        )
        if unexpected:
            more = f" and {len(unexpected) - SHOWN_ENTRIES} more" if len(unexpected) > SHOWN_ENTRIES else ""
            return f"it holds {', '.join(unexpected[:SHOWN_ENTRIES])}{more}"
        missing = [marker for marker in self.markers if not (folder / marker).exists()]
        return f"it has no {missing[0]}" if missing else None


SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
"""Files a desktop's file browser leaves in any folder it shows (macOS Finder, Windows Explorer); they do not make
a folder someone else's."""

SHOWN_ENTRIES = 3
"""Unexpected entries of a refused folder named in the error message; more are counted."""

RUN_FOLDER = FolderKind(
    "prokd run folder",
    markers=("config.yaml", "split.json"),
    optional=("env.json", "metrics.jsonl", "teachers.json", "inferred_sites.json", "calibration.json", "checkpoints",
              "eval", "efficiency.json"),
    remedy="use --resume or --overwrite",
)
"""A RUN folder: ``config.yaml`` and ``split.json`` (written first, one after the other, by every run) and nothing
else but the files and folders a run, ``prokd evaluate``, ``prokd calibrate`` and ``prokd experiment`` write there."""


def check_replaceable(folder: Path, kind: FolderKind) -> None:
    """Accept ``folder`` for ``--overwrite`` only when it is absent, empty or of ``kind``.

    Raises:
        RunDirError: in one line, naming the folder and what makes it not ``kind`` (nothing is deleted).
    """
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    reason = kind.mismatch(folder)
    if reason:
        raise RunDirError(f"{folder}: not a {kind.name} ({reason}); refusing to delete it with --overwrite")


def delete_for_overwrite(folder: Path, kind: FolderKind) -> None:
    """Delete ``folder`` for ``--overwrite``, checked again at this moment (:func:`check_replaceable`). Call it last,
    once the new command's inputs and options are validated, so that a typo never costs the old folder."""
    check_replaceable(folder, kind)
    if folder.exists():
        shutil.rmtree(folder)


def check_run_dir(out: str | Path, resume: bool = False, overwrite: bool = False, kind: FolderKind = RUN_FOLDER) -> Path:
    """The output folder ``out``, refused at once (before any input is read) when the command may not use it: a
    non-empty folder unless resuming or overwriting; with ``overwrite``, one that is not ``kind``
    (:func:`check_replaceable`); with ``resume``, one that has no ``checkpoints/last.pt`` and is not ``kind`` (a run
    killed before its first checkpoint resumes from epoch 0 with its own config and split). Nothing is written.

    Raises:
        RunDirError: naming the folder and the problem.
    """
    run_dir = Path(out)
    if resume and overwrite:
        raise RunDirError(f"{run_dir}: choose either --resume or --overwrite, not both")
    if resume:
        reason = _not_resumable(run_dir, kind)
        if reason:
            raise RunDirError(f"{run_dir}: nothing to resume ({reason})")
    elif overwrite:
        check_replaceable(run_dir, kind)
    elif run_dir.is_file() or (run_dir.is_dir() and any(run_dir.iterdir())):
        reason = kind.mismatch(run_dir)
        if reason:
            raise RunDirError(f"{run_dir}: exists and is not a {kind.name} ({reason}); choose another --out")
        raise RunDirError(f"{run_dir}: folder exists and is not empty ({kind.remedy})")
    return run_dir


def _not_resumable(run_dir: Path, kind: FolderKind) -> str | None:
    """Why ``--resume`` cannot use ``run_dir``, or None when it has ``checkpoints/last.pt`` or is ``kind``."""
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return None
    if not run_dir.is_dir():
        return "no checkpoints/last.pt"
    reason = kind.mismatch(run_dir)
    return f"no checkpoints/last.pt; {reason}" if reason else None


def prepare_run_dir(out: str | Path, resume: bool = False, overwrite: bool = False, kind: FolderKind = RUN_FOLDER) -> Path:
    """Return the output folder, created after :func:`check_run_dir`; with ``overwrite``, an earlier folder of
    ``kind`` is deleted first (:func:`delete_for_overwrite`), so call this once the command's inputs and options
    are validated."""
    run_dir = check_run_dir(out, resume, overwrite, kind)
    if not resume:
        if overwrite:
            delete_for_overwrite(run_dir, kind)
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def first_missing(path: str | Path) -> Path | None:
    """The outermost folder that creating ``path`` with its parents would make (``path`` itself or one of its
    ancestors), or None when ``path`` exists: taken before a command creates its output folder, it is what the
    command owns (:func:`removed_on_failure`)."""
    missing = Path(path).absolute()
    if missing.exists():
        return None
    while not missing.parent.exists():
        missing = missing.parent
    return missing


@contextmanager
def removed_on_failure(created: Path | None, keep: Callable[[], bool]) -> Iterator[None]:
    """Run the body; if it raises, delete ``created`` (a folder this command made, from :func:`first_missing`)
    unless ``keep()`` says it now holds something of value, then re-raise. A folder that existed before the
    command (``created`` is None) is never touched."""
    try:
        yield
    except BaseException:
        if created is not None and created.is_dir() and not keep():
            shutil.rmtree(created, ignore_errors=True)
        raise


def remove_temporaries(run_dir: Path) -> None:
    """Delete the temporary files a killed :func:`~prokd.files.atomic_write` left in the RUN folder: files named by
    :data:`~prokd.files.TEMPORARY` directly in ``RUN/`` or ``RUN/checkpoints/``; nothing else, nowhere else."""
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_file() and temporary_of(entry.name) is not None:
                    entry.unlink()


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically (see :func:`atomic_write`)."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def is_fresh(path: Path, run_dir: Path) -> bool:
    """Whether ``path`` exists and was written after the run's ``checkpoints/best.pt``."""
    best = run_dir / "checkpoints" / "best.pt"
    return path.is_file() and best.is_file() and path.stat().st_mtime_ns > best.stat().st_mtime_ns


def git_hash() -> str | None:
    """The commit of the prokd source tree, with ``-dirty`` if it has uncommitted changes; None outside git."""
    source = Path(prokd.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def environment_info(seed: int | None = None) -> dict[str, Any]:
    """Versions, git hash, seed, threads and host facts, as written to ``RUN/env.json``."""
    return {
        "prokd": prokd.__version__,
        "git": git_hash(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
