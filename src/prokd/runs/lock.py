"""Exclusive locks on files, so that several workers can share one experiment folder.

A lock is an advisory ``flock`` on a lock file (``fcntl.flock``; on NFS and cluster file systems the kernel maps it
to POSIX record locks). The operating system releases it when its process ends, however it ends, so a killed
worker leaves no stale lock behind. The holder writes its host, process id and start time into the file for the
others to name it, and removes the file when it lets go (and the folders it created for it, if they are empty).
Taking a lock checks, after ``flock``, that the path still names the file that was locked, so a lock file removed
by its previous holder in the meantime is not mistaken for the current one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from prokd.runs.folder import first_missing

__all__ = ["FileLock", "lock_holder", "try_lock"]


class FileLock:
    """A lock taken by :func:`try_lock`; ``release()`` (or leaving a ``with`` block) lets go and removes the file."""

    def __init__(self, path: Path, fd: int, created: Path | None = None) -> None:
        self.path = path
        self._fd: int | None = fd
        self._created = created

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: nobody else can have taken this file
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if self._created is not None:
            _remove_empty_folders(self.path.parent, self._created)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def try_lock(path: str | Path, wait: bool = False) -> FileLock | None:
    """Take the lock ``path``; None when another process (or another open of it here) holds it, unless ``wait``:
    then wait until it is free."""
    path = Path(path).absolute()
    while True:
        created = first_missing(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another holder removed the empty folder just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            break
        os.close(fd)  # the previous holder removed the file between our open and our flock: try the new one
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    return FileLock(path, fd, created)


def lock_holder(path: str | Path) -> str:
    """Who holds the lock ``path``, in words (``"pid 4242 on node7 since 2026-12-04 10:42:00"``), or ``"unknown"``."""
    try:
        holder = json.loads(Path(path).read_text())
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty (``os.rmdir`` removes nothing else)."""
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty (another worker's files), or gone
            return
        if folder == top:
            return
        folder = folder.parent


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
