"""Teachers' logits per slice, computed once per case and kept on disk beside each teacher's checkpoint.

A multi-teacher student with ``distill.cache_teachers`` needs every teacher's logits for every training slice
(one forward pass per slice and teacher: minutes on a CPU). Students distilled from the same teachers on the
same preprocessed images need the same logits, so they are stored per teacher and case::

    RUN/checkpoints/teacher-logits/<checkpoint digest>/<case digest>.npy     float32 (Z, C_out, S, S)

The checkpoint digest is the SHA-256 of ``best.pt`` (a retrained teacher gets a new folder and the stale
ones are removed); the case digest covers the case id and the preprocessed image's shape and values, so any
change of data or preprocessing misses the cache. Files are written atomically. A teacher without a
checkpoint file, or whose folder cannot be written, is served from memory only.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from prokd.data.slices import GridCase, volume_inputs
from prokd.distill.teachers import Teacher
from prokd.distributed import device_of
from prokd.files import atomic_write

CACHE_FOLDER = "teacher-logits"


class TeacherLogitCache:
    """``cache(case, z) -> (K, S, S)``: every teacher's logits for the un-augmented slice ``z`` of ``case``,
    stacked along channels (``K`` = the sum of the teachers' output channels).

    Args:
        teachers: the frozen teachers, in the order their channels are stacked.
        context: context slices on each side of the input stack (the largest any network needs).
        chunk: slices per teacher forward pass when a case is computed.
    """

    def __init__(self, teachers: list[Teacher], context: int, chunk: int = 8) -> None:
        self.teachers = list(teachers)
        self.context = context
        self.chunk = chunk
        self._cases: dict[str, np.ndarray] = {}
        self._folders: dict[int, Path | None] = {}

    def __call__(self, case: GridCase, z: int) -> np.ndarray:
        if case.case_id not in self._cases:
            digest = case_digest(case)
            per_teacher = [self._teacher_case(k, case, digest) for k in range(len(self.teachers))]
            self._cases[case.case_id] = np.concatenate(per_teacher, axis=1)
        return self._cases[case.case_id][z]

    def _teacher_case(self, k: int, case: GridCase, digest: str) -> np.ndarray:
        """Teacher ``k``'s logits ``(Z, C_out, S, S)`` for ``case``: read from its folder, or computed and saved."""
        folder = self._folder(k)
        path = None if folder is None else folder / f"{digest}.npy"
        if path is not None and path.is_file():
            return np.load(path)
        logits = self._compute(self.teachers[k], case)
        if path is not None:
            try:
                atomic_write(path, lambda handle: np.save(handle, logits))
            except OSError as error:
                warnings.warn(f"{path}: teacher logits not cached on disk ({error})", stacklevel=2)
                self._folders[k] = None
        return logits

    @torch.no_grad()
    def _compute(self, teacher: Teacher, case: GridCase) -> np.ndarray:
        inputs = torch.from_numpy(volume_inputs(case.image, self.context).astype(np.float32))
        return teacher.volume_logits(inputs.to(device_of(teacher.model)), self.chunk).cpu().numpy()

    def _folder(self, k: int) -> Path | None:
        """Teacher ``k``'s cache folder for its current checkpoint (created, stale siblings removed), or None."""
        if k not in self._folders:
            self._folders[k] = _checkpoint_folder(self.teachers[k].checkpoint)
        return self._folders[k]


def case_digest(case: GridCase) -> str:
    """A digest of a preprocessed case: its id, image shape and image values."""
    image = np.ascontiguousarray(case.image, dtype=np.float32)
    digest = hashlib.sha256(f"{case.case_id}|{image.shape}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:24]


def _checkpoint_folder(checkpoint: Path | None) -> Path | None:
    if checkpoint is None or not checkpoint.is_file():
        return None
    root = checkpoint.parent / CACHE_FOLDER
    folder = root / _file_digest(checkpoint)
    try:
        for stale in root.glob("*"):
            if stale != folder and stale.is_dir():
                shutil.rmtree(stale)
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(f"{root}: teacher logits kept in memory only ({error})", stacklevel=3)
        return None
    return folder


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:24]
