"""The one training loop, for supervised and distillation runs alike.

What is optimised is an *objective*: a module that maps ``(model, batch)`` to ``(loss, terms)``. A supervised
run uses :class:`SupervisedObjective`; distillation objectives add frozen teachers and trainable adapters,
whose parameters the loop trains alongside the model and stores in the checkpoint under ``extra``.

Schedule: AdamW with linear warm-up (over ``train.warmup_fraction`` of the run) and cosine decay over the run's
*progress*, the larger of ``step / total_steps`` and ``elapsed / time_budget``, so a time-budgeted run warms up
and anneals like a step-budgeted one.
Every epoch reseeds torch, the slice sampler and the augmentation from ``(seed, epoch)``, which makes a run
resumed from its last checkpoint identical to one that was never interrupted.

One commit point per epoch: the atomic rename of ``checkpoints/last.pt``, which carries the epoch log so far
(``log``, one record per epoch). Each epoch writes ``last.pt``, then ``best.pt`` (a copy of it, when the epoch is
the best so far or nothing has been validated yet), then rewrites ``metrics.jsonl`` from ``log``; every write is
atomic. A run killed before the rename redoes the epoch; one killed after it is brought in line with ``last.pt``
when it resumes (:func:`settle_run`): ``metrics.jsonl`` is rewritten from ``log`` (a lost line comes back, a line
of a later epoch goes), ``best.pt`` is rewritten from ``last.pt`` when ``last.pt`` names its own epoch as the best
(``best_epoch == epoch``, or ``best_epoch == -1``) but ``best.pt`` holds another, and temporary files of killed
writes are removed. ``best.pt`` is written only after the rename, so it never holds an epoch ``last.pt`` does not
know. A checkpoint of an older version, without ``log``, resumes with ``metrics.jsonl`` cut to its epochs.
Tests inject kills at each write boundary through ``fit``'s ``fault_hook`` (:data:`WRITE_POINTS`).

Data-parallel (``torchrun``, :mod:`prokd.distributed`): the model and the objective's trainable parts train as
one :class:`~torch.nn.parallel.DistributedDataParallel` module; each process keeps its share of the same global
batch, the validation cases are shared out and their Dice gathered, and only rank 0 settles, writes and reports.
The segmentation loss (Dice and Lovász pool the whole batch) is taken over the gathered global batch, so a
supervised run follows the single-process one up to float rounding (distillation's consistency term is gathered
likewise, :mod:`prokd.distill.consistency`); distillation's KL and feature terms are means over each process's
share, averaged (a weighted KL mean, ``kl_uncertain``, is weighted per share).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from prokd.config import RunConfig, TrainConfig
from prokd.data.slices import Batch, GridCase, SliceSampler
from prokd.distributed import World
from prokd.eval.metrics import dice_score
from prokd.infer.predict import Predictor
from prokd.losses import SegmentationLoss
from prokd.runs.checkpoint import load_checkpoint, save_checkpoint
from prokd.train.progress import training_progress
from prokd.files import atomic_write_text
from prokd.runs.folder import remove_temporaries


class SupervisedObjective(nn.Module):
    """Segmentation loss on the labeled slices of a batch: ``(model, batch) -> (loss, terms)``.

    In a data-parallel run (``world``) the loss is taken over every process's slices (:meth:`World.concat`), so
    batch-pooled Dice and Lovász see the same global batch as one process would.
    """

    def __init__(self, loss: SegmentationLoss, world: World = World()) -> None:
        super().__init__()
        self.loss = loss
        self.world = world

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits, target, labeled = (self.world.concat(t) for t in (model(batch.x), batch.y, batch.labeled))
        return self.loss(logits[labeled], target[labeled])


@dataclass
class ValidationCase:
    """A validation case: its grid version for the network and its original-grid ``truth`` ``(Z, Y, X)``."""

    grid: GridCase
    truth: np.ndarray


@dataclass
class RunState:
    """Where a run stands; stored in every checkpoint under ``progress``."""

    epoch: int = 0
    step: int = 0
    elapsed_seconds: float = 0.0
    best_val_dice: float = -1.0
    best_epoch: int = -1


EpochCallback = Callable[[int, dict[str, Any]], None]

FaultHook = Callable[[str, int], None]
"""Called with a write boundary (one of :data:`WRITE_POINTS`) and the epoch being written (1-based)."""

WRITE_POINTS = ("before_last", "after_last", "after_best", "after_log")
"""The boundaries of an epoch's writes, in order: nothing written; ``last.pt`` (the commit point); ``best.pt``
(when it is rewritten); ``metrics.jsonl``."""


def learning_rate(base_lr: float, progress: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction, then cosine decay to 1 % of ``base_lr``."""
    if progress < warmup:
        return base_lr * (progress / warmup)
    done = min(1.0, (progress - warmup) / max(1e-8, 1.0 - warmup))
    return base_lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * done)))


def warmup_fraction(train: TrainConfig) -> float:
    """The share of the run's progress over which the learning rate warms up: ``train.warmup_fraction``, or
    ``warmup_epochs / epochs`` for a config that sets ``train.warmup_epochs`` (see :class:`TrainConfig`)."""
    if train.warmup_epochs is not None:
        return train.warmup_epochs / train.epochs
    return train.warmup_fraction


def fit(
    run_dir: Path,
    config: RunConfig,
    model: nn.Module,
    objective: nn.Module,
    sampler: SliceSampler,
    val_cases: list[ValidationCase],
    checkpoint_meta: dict[str, Any],
    resume: bool = False,
    on_epoch_end: EpochCallback | None = None,
    console: Console | None = None,
    fault_hook: FaultHook | None = None,
    world: World = World(),
    device: torch.device | str = "cpu",
) -> RunState:
    """Train ``model`` on batches from ``sampler`` to minimise ``objective``; validate, log and checkpoint.

    Args:
        run_dir: the RUN folder; writes ``metrics.jsonl`` and ``checkpoints/{last,best}.pt``.
        config: the resolved run config (``train`` section drives the schedule).
        model: the network being trained.
        objective: maps ``(model, batch)`` to ``(loss, terms)``; its own trainable parameters are optimised too.
        sampler: source of training batches.
        val_cases: cases scored with 3D Dice after every ``val_every`` epochs (best checkpoint by that).
        checkpoint_meta: what every checkpoint carries besides weights (model spec, preprocessing, config, split).
        resume: continue from ``checkpoints/last.pt`` (:func:`settle_run`), or from epoch 0 without one.
        on_epoch_end: called with ``(epoch, log_record)`` after each epoch's checkpoints and log are written.
        console: where progress goes (:func:`~prokd.train.progress.training_progress`); None shows nothing.
        fault_hook: called at each write boundary (:data:`WRITE_POINTS`); for fault-injection tests.
        world: this process's place in a data-parallel run (module docstring); a single process by default.
        device: where the model, the objective (teachers included) and the batches live.
    """
    train_cfg = config.train
    model.to(device)
    objective.to(device)
    parameters = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    state, log = _restore(run_dir, model, objective, optimizer, world) if resume else (RunState(), [])
    train_step = _train_step(model, objective, world)
    predictor = Predictor(model, config.preprocess, config.postprocess)
    budget = None if train_cfg.time_budget_minutes is None else 60.0 * train_cfg.time_budget_minutes
    total_steps = train_cfg.epochs * train_cfg.steps_per_epoch
    warmup = warmup_fraction(train_cfg)

    def progress_fraction() -> float:
        by_steps = state.step / total_steps
        return max(by_steps, state.elapsed_seconds / budget) if budget else by_steps

    seg_losses = [module for module in objective.modules() if isinstance(module, SegmentationLoss)]  # Lovász warm-up
    with training_progress(console, progress_fraction()) as display:
        while state.epoch < train_cfg.epochs and progress_fraction() < 1.0:
            epoch_seed = train_cfg.seed * 100_003 + state.epoch
            torch.manual_seed(epoch_seed)
            rng = sampler.seed(epoch_seed)
            model.train()
            objective.train()
            sums: dict[str, float] = defaultdict(float)
            started = time.perf_counter()
            steps = 0
            while steps < train_cfg.steps_per_epoch and progress_fraction() < 1.0:
                lr = learning_rate(train_cfg.lr, progress_fraction(), warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                for seg_loss in seg_losses:
                    seg_loss.set_progress(progress_fraction())
                batch = sampler.batch(rng)
                loss, terms = train_step(batch.take(world.shard(len(batch))).to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_value = loss.item()
                for name, value in {"loss": loss_value, **terms}.items():
                    sums[name] += value
                steps += 1
                state.step += 1
                state.elapsed_seconds += time.perf_counter() - started
                if budget:  # every process must agree on when the run ends
                    state.elapsed_seconds = world.max(state.elapsed_seconds)
                started = time.perf_counter()
                display.update(
                    min(1.0, progress_fraction()), f"epoch {state.epoch + 1} step {state.step} loss {loss_value:.3f}"
                )
            record = {
                "epoch": state.epoch + 1,
                "step": state.step,
                "lr": lr,
                **world.mean({name: total / steps for name, total in sums.items()}),
            }
            state.epoch += 1
            finished = state.epoch >= train_cfg.epochs or progress_fraction() >= 1.0
            if val_cases and (state.epoch % train_cfg.val_every == 0 or finished):
                record["val_dice"] = validate(predictor, val_cases, world)
                display.note(f"epoch {state.epoch} step {state.step}: val Dice {record['val_dice']:.3f}")
            record["elapsed_seconds"] = round(state.elapsed_seconds, 2)
            log.append(record)
            _note_best(state, record.get("val_dice"))
            if world.is_main:
                payload = {**checkpoint_meta, "state_dict": model.state_dict(),
                           "extra": {"objective": objective.state_dict()}, "optimizer": optimizer.state_dict()}
                _commit_epoch(run_dir, payload, state, log, fault_hook or _no_fault)
                if on_epoch_end is not None:
                    on_epoch_end(state.epoch, record)
    world.barrier()  # every process returns once rank 0's files are written
    return state


def _train_step(model: nn.Module, objective: nn.Module, world: World) -> Callable[[Batch], tuple[torch.Tensor, dict]]:
    """``batch -> (loss, terms)``: the objective applied to the model; across processes, as one DDP module whose
    gradients (the model's and the objective's trainable parts') are averaged."""
    if world.size == 1:
        return lambda batch: objective(model, batch)
    trains_itself = any(p.requires_grad for p in objective.parameters())  # adapters, gate: not used on every step
    return DistributedDataParallel(
        _ModelWithObjective(model, objective), forward_sync_buffers=False, find_unused_parameters=trains_itself
    )


class _ModelWithObjective(nn.Module):
    """The model and its objective as one module, ``batch -> (loss, terms)``, for DDP."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.model, batch)


def validate(predictor: Predictor, cases: list[ValidationCase], world: World = World()) -> float:
    """Mean 3D Dice of the predictor's masks against the original-grid truth; across processes each scores its
    share of the cases and the scores are gathered (same mean as one process)."""
    predictor.model.eval()
    mine = range(world.rank, len(cases), world.size)
    scored = [(i, dice_score(predictor.predict_grid(cases[i].grid.image, cases[i].grid.plan).mask, cases[i].truth))
              for i in mine]
    return float(np.mean([score for _, score in sorted(world.gather(scored))]))


def _no_fault(point: str, epoch: int) -> None:
    pass


def _commit_epoch(
    run_dir: Path, payload: dict[str, Any], state: RunState, log: list[dict[str, Any]], fault_hook: FaultHook
) -> None:
    """Write the epoch's ``last.pt`` (the commit point), ``best.pt`` and ``metrics.jsonl``, in that order."""
    payload = {**payload, "progress": vars(state).copy(), "log": log}
    fault_hook("before_last", state.epoch)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", payload)
    fault_hook("after_last", state.epoch)
    if _best_is_last(payload["progress"]):
        save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
    fault_hook("after_best", state.epoch)
    _write_log(run_dir / "metrics.jsonl", log)
    fault_hook("after_log", state.epoch)


def _note_best(state: RunState, val_dice: float | None) -> None:
    """Record the epoch just finished as the best when its validation Dice beats every earlier one."""
    if val_dice is not None and val_dice > state.best_val_dice:
        state.best_val_dice, state.best_epoch = val_dice, state.epoch


def _best_is_last(progress: dict[str, Any]) -> bool:
    """Whether ``best.pt`` is a copy of the ``last.pt`` with this progress: its epoch is the best so far, or
    nothing has been validated yet."""
    return progress["best_epoch"] in (progress["epoch"], -1)


def settle_run(run_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Bring an interrupted RUN folder in line with its commit point ``checkpoints/last.pt`` (module docstring):
    remove temporary files of killed writes, rewrite ``best.pt`` and ``metrics.jsonl`` where they disagree with
    ``last.pt``; a file that already agrees is not touched.

    Returns:
        ``last.pt``'s payload (None without one: the run starts from epoch 0) and its epoch log.
    """
    remove_temporaries(run_dir)
    payload, log = committed_run(run_dir)
    if payload is not None and _best_is_last(payload["progress"]):
        best = run_dir / "checkpoints" / "best.pt"
        if not best.is_file() or load_checkpoint(best)["progress"] != payload["progress"]:
            save_checkpoint(best, payload)
    if _log_text(log) != _read_text(run_dir / "metrics.jsonl"):
        _write_log(run_dir / "metrics.jsonl", log)
    return payload, log


def committed_run(run_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``checkpoints/last.pt``'s payload (None without one) and its epoch log, read without changing anything."""
    last = run_dir / "checkpoints" / "last.pt"
    payload = load_checkpoint(last) if last.is_file() else None
    log = [] if payload is None else payload.get("log")
    if log is None:  # a checkpoint written before ``log`` existed
        log = _logged_records(run_dir / "metrics.jsonl", payload["progress"]["epoch"])
    return payload, log


def _restore(
    run_dir: Path, model: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer, world: World
) -> tuple[RunState, list[dict[str, Any]]]:
    """Load the run's commit point into the model, objective and optimiser; rank 0 settles the folder first."""
    settled = settle_run(run_dir) if world.is_main else None
    world.barrier()
    payload, log = settled or committed_run(run_dir)
    if payload is None:
        return RunState(), log
    model.load_state_dict(payload["state_dict"])
    objective.load_state_dict(payload["extra"]["objective"])
    optimizer.load_state_dict(payload["optimizer"])
    return RunState(**payload["progress"]), log


def _logged_records(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` up to epoch ``epochs`` (those of an interrupted later epoch dropped)."""
    records = [json.loads(line) for line in _read_text(path).splitlines()]
    return [record for record in records if record["epoch"] <= epochs]


def _read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _log_text(log: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in log)


def _write_log(path: Path, log: list[dict[str, Any]]) -> None:
    atomic_write_text(path, _log_text(log))
