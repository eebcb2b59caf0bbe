"""Where a training process runs: its device, and its place among the processes of a data-parallel run.

Data parallelism uses PyTorch's own engine: ``torchrun --nproc-per-node N -m prokd train|distill ...`` starts N
processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR`` / ``MASTER_PORT`` in their environment;
:func:`joined_world` joins them into one process group for the run (gloo on CPU, nccl on CUDA) and the training
loop wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`. Every process draws the same global
batch from the same seeded sampler and keeps its own contiguous share of it (:meth:`World.shard`), so the slices
and their augmentation are those of a single-process run with the same ``train.batch_size``; gradients are averaged
over the processes. Only rank 0 writes files. A plain ``prokd train`` is a world of one.

``--device auto`` picks CUDA when it is available, else the CPU; under torchrun each process takes the GPU of its
``LOCAL_RANK``. The code path is the same on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from prokd.config import ConfigError

__all__ = ["DEVICES", "World", "device_of", "is_main_process", "joined_world", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device NAME`` (one of :data:`DEVICES`); a CUDA device is the one of this
    process's ``LOCAL_RANK``.

    Raises:
        ConfigError: an unknown name, or ``cuda`` on a machine where torch sees no CUDA device.
    """
    if name not in DEVICES:
        raise ConfigError(f"--device {name}: must be one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: torch {torch.__version__} sees no CUDA device here (use --device cpu)")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (the CPU for a module without parameters, e.g. an ONNX one)."""
    parameter = next(module.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` processes of one training run (``World()``: a single process)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` items (``count`` a multiple of ``size``)."""
        share = count // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size > 1:
            dist.barrier()

    def max(self, value: float) -> float:
        """The largest ``value`` over the processes (so they agree on a time-budgeted run's progress)."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each entry averaged over the processes (every process holds the same keys)."""
        if self.size == 1 or not values:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.size).tolist()))

    def concat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (same shape on each) concatenated along dim 0 in rank order: the global batch.

        Gradients flow back to each process's own part, summed over the processes (the backward of all-gather);
        with DDP's average over processes, a loss computed alike on every process from the concatenation gets
        exactly its single-process gradient (:class:`GatheredShares`)."""
        if self.size == 1:
            return tensor
        if tensor.dtype == torch.bool:  # gloo gathers no booleans
            return self.concat(tensor.to(torch.uint8)).bool()
        return GatheredShares.apply(tensor)

    def gather(self, items: list) -> list:
        """Every process's ``items`` concatenated in rank order (picklable items)."""
        if self.size == 1:
            return items
        parts: list[list] = [[] for _ in range(self.size)]
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]


class GatheredShares(torch.autograd.Function):
    """All-gather along dim 0 with its gradient: ``(B, ...)`` on each of ``N`` processes -> ``(N * B, ...)``.

    The backward sums the gradient of the concatenation over the processes and returns this process's rows.
    Both directions are plain blocking collectives (``all_gather``, ``all_reduce``). torch's functional
    all-gather (``all_gather_single``) is not used: its backward, a ``reduce_scatter_tensor`` on gloo, corrupted
    the heap in about one run in ten here (torch 2.13, SIGSEGV or ``malloc(): unaligned tcache chunk``).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.contiguous().clone()
        dist.all_reduce(summed)
        return summed.chunk(dist.get_world_size())[dist.get_rank()]


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launch (or not launched by ``torchrun`` at all): the one that prints."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def joined_world(device: torch.device) -> Iterator[World]:
    """This process's :class:`World` for the duration of one run: a single process, or, under ``torchrun``
    (``WORLD_SIZE`` > 1), its rank in the process group (gloo on CPU, nccl on CUDA).

    A group joined here is destroyed on the way out, also after an error: a process that exits with its gloo
    group alive can abort (SIGABRT) while the interpreter shuts down, because gloo's worker threads still hold
    tensors (pytorch/pytorch#179291), and torchrun then reports a finished run as failed."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        yield World()
        return
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield World(dist.get_rank(), dist.get_world_size())
    finally:
        if joined:
            dist.destroy_process_group()
