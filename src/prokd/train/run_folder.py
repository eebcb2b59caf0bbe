"""The RUN folder: creation rules (never overwrite silently), environment record, JSON helpers.

Layout (see docs/architecture.md)::

    RUN/config.yaml  split.json  env.json  metrics.jsonl  checkpoints/{last,best}.pt  eval/
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import monai
import numpy as np
import torch

import prokd


class RunDirError(ValueError):
    """A RUN folder cannot be used as asked; the message names the folder."""


def prepare_run_dir(out: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Return the RUN folder, creating it; refuse to reuse a non-empty one unless resuming or overwriting."""
    run_dir = Path(out)
    if resume and overwrite:
        raise RunDirError(f"{run_dir}: choose either --resume or --overwrite, not both")
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise RunDirError(f"{run_dir}: nothing to resume (no checkpoints/last.pt)")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"{run_dir}: folder exists and is not empty (use --resume or --overwrite)")
        shutil.rmtree(run_dir)
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


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Create or replace ``path`` atomically: ``write`` fills a temporary file in the same folder, which is then
    renamed over ``path``, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically (see :func:`atomic_write`)."""
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


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
