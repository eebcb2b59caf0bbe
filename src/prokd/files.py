"""Atomic file writes: a reader, or a process killed mid-write, never sees a half-written file.

Every file prokd writes goes through :func:`atomic_write`: a temporary file beside the target (named by
:data:`TEMPORARY`), filled, then renamed over the target. A killed write leaves only that temporary file, which
the RUN folder code recognises and removes (:func:`prokd.runs.folder.remove_temporaries`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["TEMPORARY", "atomic_write", "atomic_write_text", "temporary_of", "temporary_path"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Create or replace ``path`` atomically: ``write`` fills a temporary file in the same folder, which is then
    renamed over ``path``, so a reader never sees a half-written file."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def temporary_path(path: str | Path) -> Path:
    """A new empty temporary file beside ``path``, named by :data:`TEMPORARY`, for content that another library
    writes by file name before it is renamed over ``path`` (the folder is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
"""The name of :func:`atomic_write`'s temporary file for ``<target>``: ``.<target>.<8 random characters>.tmp``
(``tempfile.mkstemp``'s characters)."""


def temporary_of(name: str) -> str | None:
    """The file whose :func:`atomic_write` temporary file ``name`` is (``.last.pt.k2j4_x9a.tmp`` -> ``last.pt``),
    or None when ``name`` is not one."""
    match = TEMPORARY.fullmatch(name)
    return match["target"] if match else None


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Create or replace the text file ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))
