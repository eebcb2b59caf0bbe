"""How many CPU threads prokd trains with when ``train.threads`` is not set.

``OMP_NUM_THREADS`` when it is set (the first number of a nested list such as ``4,2``), as schedulers and users set
it to what a job may use; otherwise the cores this process may run on: its CPU affinity (``taskset``, a batch
system's CPU set), capped by a cgroup CPU quota (a container's ``--cpus``), rounded up. ``os.cpu_count()`` counts
the machine's cores, which over-subscribes a job given fewer of them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from prokd.config import ConfigError

__all__ = ["OMP_VARIABLE", "available_cores", "cgroup_cpu_limit", "default_threads"]

OMP_VARIABLE = "OMP_NUM_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def default_threads(cgroup_root: Path = CGROUP_ROOT) -> int:
    """``OMP_NUM_THREADS`` if set, else :func:`available_cores`.

    Raises:
        ConfigError: ``OMP_NUM_THREADS`` is set to anything but a positive whole number (or a list of them).
    """
    text = os.environ.get(OMP_VARIABLE, "").strip()
    if not text:
        return available_cores(cgroup_root)
    first = text.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ConfigError(f"{OMP_VARIABLE}={text!r}: must be a positive whole number")
    return int(first)


def available_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may run on: its CPU affinity, capped by the cgroup CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, min(cores, limit) if limit is not None else cores)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """``ceil(quota / period)`` of the cgroup CPU quota under ``root`` (v2 ``cpu.max``, else v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us``); None without a quota or readable files."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 writes -1 for no quota
        return None
    return math.ceil(quota_us / period_us)
