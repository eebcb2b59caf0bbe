"""A training run from a dataset to a self-describing RUN folder: supervised, or distilled from teachers.

One set-up (RUN folder, split, cases on the grid, model from the registry) and one loop serve both; a
supervised run is a distillation run with no teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from torch import nn

from prokd.config import ConfigError, RunConfig, dotted_items, first_difference, load_config, save_config
from prokd.data.augment import build_augmentation
from prokd.data.datalist import Case, CaseIndex, LoadedCase, load_case, load_cases
from prokd.data.preprocess import Preprocessor
from prokd.data.slices import GridCase, SliceSampler, to_grid_case
from prokd.data.splits import load_split, make_split, restrict, save_split, site_test_split
from prokd.distill.setup import build_distillation, check_teachers, infer_unlabeled_sites, inferred_sites_line
from prokd.distill.teachers import Teacher
from prokd.distributed import World, joined_world, resolve_device
from prokd.infer.framing import extent_range
from prokd.memory import available_memory, format_bytes, layer_output_bytes, training_step_bytes
from prokd.losses import SegmentationLoss
from prokd.models import build_model, get_spec
from prokd.threads import default_threads
from prokd.train.loop import EpochCallback, FaultHook, RunState, SupervisedObjective, ValidationCase, fit
from prokd.runs.folder import (
    RunDirError,
    check_run_dir,
    environment_info,
    first_missing,
    prepare_run_dir,
    removed_on_failure,
    write_json,
)


@dataclass
class PreparedRun:
    """Everything a training loop needs, set up in a RUN folder."""

    run_dir: Path
    config: RunConfig
    index: CaseIndex
    split: dict[str, list[str]]
    train_cases: list[GridCase]
    val_cases: list[ValidationCase]
    model: nn.Module

    def unlabeled_cases(self) -> list[GridCase]:
        """Images the run may use without labels: the dataset's unlabeled images (and its test images with
        ``unlabeled_include_test``) plus the labeled cases left out of every split (training cases dropped by
        ``sites`` / ``max_cases``); never validation or test cases, except in a run without labels
        (:meth:`label_free_images`)."""
        test_images = self.index.test if self.config.unlabeled_include_test else []
        if self.config.no_labels:
            return self.images(self.label_free_images(self.index.unlabeled + test_images))
        in_split = {case_id for ids in self.split.values() for case_id in ids}
        left_out = [case for case in self.index.labeled if case.case_id not in in_split]
        return self.images(self.index.unlabeled + test_images + left_out)

    def label_free_images(self, unlabeled: list[Case]) -> list[Case]:
        """What a run without labels (``distill.no_labels``) learns from: its test cases (transductive: the
        images of the cases it is tested on, never their labels) and the ``unlabeled`` images; with ``sites``,
        those of these sites only (an image without a site cannot be shown to come from them)."""
        sites = self.config.sites
        images = self.index.select(self.split["test"]) + unlabeled
        return [case for case in images if sites is None or case.site in sites]

    def images(self, cases: list[Case]) -> list[GridCase]:
        """``cases`` read as the run reads them and put on its grid, without their labels."""
        preprocessor = Preprocessor(self.config.preprocess)
        return [to_grid_case(_without_label(load_run_case(c, self.config)), preprocessor) for c in cases]


def prepare_run(
    data: str | Path,
    out: str | Path,
    config: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    split: dict[str, list[str]] | None = None,
) -> PreparedRun:
    """Check the RUN folder ``out`` (:func:`~prokd.runs.folder.check_run_dir`), fix the split and load the
    cases onto the grid; nothing is written (:func:`write_run_files` creates the folder).

    On resume the folder's own ``config.yaml`` and ``split.json`` are used, so the run continues unchanged.
    ``split`` forces given case ids (e.g. a benchmark's saved split) instead of drawing one from the config.
    A distillation's teachers are checked against the split (:func:`~prokd.distill.setup.check_teachers`).
    """
    run_dir = check_run_dir(out, resume=resume, overwrite=overwrite)
    index = load_cases(data)
    if resume:
        config = load_config(run_dir / "config.yaml")
        split = load_split(run_dir / "split.json")
    else:
        split = split or _draw_split(index, config)
        if config.no_labels:
            _check_label_free_split(split)
        if config.distill is not None:
            _check_output_holds_no_teacher(run_dir, check_teachers(config, split))
    torch.set_num_threads(config.train.threads or default_threads())
    preprocessor = Preprocessor(config.preprocess)
    train_cases = [to_grid_case(load_run_case(c, config), preprocessor) for c in index.select(split["train"])]
    val_cases = []
    for case in index.select(split["val"]):
        loaded = load_run_case(case, config)
        val_cases.append(ValidationCase(to_grid_case(loaded, preprocessor), loaded.label))
    torch.manual_seed(config.train.seed)
    model = build_model(config.model.name, config.preprocess.in_channels, config.model.out_channels, **config.model.kwargs)
    return PreparedRun(run_dir, config, index, split, train_cases, val_cases, model)


def _check_output_holds_no_teacher(run_dir: Path, teachers: list[Path]) -> None:
    """Refuse an output folder that is, or contains, one of the run's teachers: ``--overwrite`` would delete it."""
    out = run_dir.resolve()
    for teacher in teachers:
        if out == teacher.resolve() or out in teacher.resolve().parents:
            raise RunDirError(f"{run_dir}: holds the teacher {teacher} (choose another --out)")


def write_run_files(
    prepared: PreparedRun,
    data: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    teachers: list[dict[str, Any]] | None = None,
    inferred_sites: dict[str, Any] | None = None,
) -> None:
    """Create the RUN folder (with ``overwrite``, only now replacing an earlier run: every input and option has
    been validated) and write ``config.yaml``, ``split.json`` (unless resuming), ``env.json``, the
    distillation's ``teachers.json`` records and, with ``distill.infer_sites``, ``inferred_sites.json``."""
    run_dir, config = prepare_run_dir(prepared.run_dir, resume=resume, overwrite=overwrite), prepared.config
    if not resume:
        save_config(config, run_dir / "config.yaml")
        save_split(prepared.split, run_dir / "split.json", seed=config.train.seed, mode=config.split.mode, data=str(data))
    write_json(run_dir / "env.json", environment_info(config.train.seed))
    if teachers is not None:
        write_json(run_dir / "teachers.json", teachers)
    if inferred_sites is not None:
        write_json(run_dir / "inferred_sites.json", inferred_sites)


def checkpoint_meta(prepared: PreparedRun, teachers: Sequence[Teacher] = ()) -> dict[str, Any]:
    """What every checkpoint of the run carries besides its weights: enough to rebuild and predict (the
    distillation's ``teachers`` supply the range of gland extents when the run has no labeled cases)."""
    config = prepared.config
    resolved = config.to_dict()
    return {
        "model": {
            "name": config.model.name,
            "in_channels": config.preprocess.in_channels,
            "out_channels": config.model.out_channels,
            # resolved: the registry's defaults as they are today plus the run's overrides, so that the checkpoint
            # rebuilds the same network after a registered default changes
            "kwargs": {**get_spec(config.model.name).default_kwargs, **config.model.kwargs},
        },
        "preprocess": resolved["preprocess"],
        "postprocess": _resolved_postprocess(dict(resolved["postprocess"]), prepared, teachers),
        "config": resolved,
        "split": prepared.split,
    }


def _resolved_postprocess(
    postprocess: dict[str, Any], prepared: PreparedRun, teachers: Sequence[Teacher]
) -> dict[str, Any]:
    """The run's post-processing ``postprocess`` (a copy, completed here) with ``gland_extents`` (the training range
    of the gland's extent on the grid, for locate-then-segment: :mod:`prokd.infer.framing`) unless the config sets
    it: measured on the run's labeled training cases, else (distilled without labels) the union of its teachers'
    ranges when each has one."""
    if postprocess["gland_extents"] is None:
        labels = [case.label for case in prepared.train_cases if case.label is not None]
        postprocess["gland_extents"] = extent_range(labels) or _union([t.gland_extents for t in teachers])
    if postprocess["relocate"] and postprocess["gland_extents"] is None:
        raise ConfigError("'postprocess.relocate' needs the training range of gland extents: the run has no labeled "
                          "training case with a gland and its teachers store none (set postprocess.gland_extents)")
    return postprocess


def _union(ranges: Sequence[tuple[float, float] | None]) -> tuple[float, float] | None:
    """The smallest range holding every one of ``ranges``; None when there are none or one is unknown."""
    if not ranges or None in ranges:
        return None
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def make_sampler(
    prepared: PreparedRun,
    context: int | None = None,
    unlabeled: list[GridCase] | None = None,
    teacher_maps: Callable[[GridCase, int], np.ndarray] | None = None,
) -> SliceSampler:
    """The run's slice sampler; ``context`` may exceed the student's (for teachers that see more slices);
    ``teacher_maps`` supplies cached teacher logits per slice (``distill.cache_teachers``)."""
    config = prepared.config
    return SliceSampler(
        prepared.train_cases,
        batch_size=config.train.batch_size,
        context=config.preprocess.context if context is None else context,
        foreground_fraction=config.train.foreground_fraction,
        augmentation=build_augmentation(config.augment, config.preprocess.size),
        unlabeled=unlabeled,
        unlabeled_fraction=config.distill.unlabeled_share if config.distill and unlabeled else 0.0,
        teacher_maps=teacher_maps,
    )


def train_run(
    data: str | Path,
    out: str | Path,
    config: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    split: dict[str, list[str]] | None = None,
    console: Console | None = None,
    on_epoch_end: EpochCallback | None = None,
    fault_hook: FaultHook | None = None,
    device: str = "auto",
) -> RunState:
    """Train ``config.model`` on ``data`` into the RUN folder ``out``.

    Without a ``distill`` section this is supervised training (segmentation loss on labeled slices); with
    one, the frozen teachers it names are distilled into the model (:mod:`prokd.distill`); with
    ``distill.no_labels`` on images alone (:meth:`PreparedRun.label_free_images`). All use the same RUN folder,
    loop and checkpoints.

    ``overwrite`` replaces an earlier RUN folder (and refuses any other folder) only once the data, split,
    model and objective are set up, just before the folder is written, so a bad option leaves the old run intact.
    A run that fails before its first checkpoint (bad data or an option found out late, or interrupted in its
    first epoch: nothing to resume) removes ``out`` if this call created it, so the corrected command needs no
    ``--overwrite``; a folder that existed before is left as it is. A folder killed before its first checkpoint
    (still holding its ``config.yaml`` and ``split.json``) resumes from epoch 0. ``fault_hook`` is
    :func:`~prokd.train.loop.fit`'s, for fault-injection tests.

    ``device`` is ``auto``, ``cpu`` or ``cuda`` (:func:`~prokd.distributed.resolve_device`). Under ``torchrun``
    every process sets up the same run and checks the folder; rank 0 alone writes it (:mod:`prokd.distributed`).
    """
    torch_device = resolve_device(device)
    has_checkpoint = (Path(out) / "checkpoints" / "last.pt").is_file
    with joined_world(torch_device) as world, removed_on_failure(
            first_missing(out) if world.is_main else None, keep=has_checkpoint):
        prepared = prepare_run(data, out, config, resume=resume, overwrite=overwrite, split=split)
        config = prepared.config
        _check_batch_shares(config, world)
        seg_loss = SegmentationLoss.from_config(config.loss, config.model.out_channels)
        teachers = inferred_sites = None
        if config.distill is None:
            objective, sampler = SupervisedObjective(seg_loss, world), make_sampler(prepared)
        else:
            unlabeled = prepared.unlabeled_cases() if config.distill.unlabeled_share > 0 else None
            objective, teachers = build_distillation(prepared, seg_loss, data, world, unlabeled or ())
            if config.distill.infer_sites:
                unlabeled, inferred_sites = infer_unlabeled_sites(prepared, objective.teachers, unlabeled)
                if console is not None and world.is_main:
                    console.print(inferred_sites_line(inferred_sites), highlight=False, soft_wrap=True)
            cached = objective.teacher_logits if config.distill.cache_teachers else None
            sampler = make_sampler(prepared, context=objective.context, unlabeled=unlabeled, teacher_maps=cached)
        frozen_teachers = [] if config.distill is None else objective.teachers
        check_memory(prepared, frozen_teachers, sampler, world)
        meta = checkpoint_meta(prepared, frozen_teachers)
        world.barrier()  # every process has checked the folder before rank 0 writes it
        if world.is_main:
            write_run_files(prepared, data, resume=resume, overwrite=overwrite, teachers=teachers,
                            inferred_sites=inferred_sites)
        world.barrier()
        return fit(
            prepared.run_dir,
            config,
            prepared.model,
            objective,
            sampler,
            prepared.val_cases,
            meta,
            resume=resume,
            on_epoch_end=on_epoch_end,
            console=console if world.is_main else None,
            fault_hook=fault_hook,
            world=world,
            device=torch_device,
        )


def check_memory(prepared: PreparedRun, teachers: list[Teacher], sampler: SliceSampler, world: World) -> None:
    """Refuse, before the RUN folder is written, a run whose training step would not fit in the memory available
    (:mod:`prokd.memory`): the model's step on this process's share of the batch, each teacher's forward pass on
    it and, with ``distill.cache_teachers``, the teachers' cached logits for every slice the sampler draws from.
    The cases themselves are loaded by now, so the memory available already excludes them."""
    available = available_memory()
    if available is None:
        return
    config = prepared.config
    share, size = config.train.batch_size // world.size, config.preprocess.size
    needed = training_step_bytes(prepared.model, (config.preprocess.in_channels, size, size), share)
    for teacher in teachers:
        grid = teacher.preprocess.size
        needed += share * layer_output_bytes(teacher.model, (1, teacher.preprocess.in_channels, grid, grid))
    if sampler.teacher_maps is not None:
        slices = sum(len(case.image) for case in [*sampler.cases, *sampler.unlabeled])
        needed += 4 * slices * size * size * sum(teacher.out_channels for teacher in teachers)
    if needed > available:
        raise ConfigError(
            f"a training step of {config.model.name} at {size}² with train.batch_size {config.train.batch_size}"
            f"{' (cached teacher logits included)' if sampler.teacher_maps is not None else ''} needs about "
            f"{format_bytes(needed)}; {format_bytes(available)} is available "
            "(lower train.batch_size or preprocess.size)"
        )


def check_resume_keeps(run_dir: str | Path, config_file: str | Path | None, overrides: dict[str, Any]) -> None:
    """Refuse options given with ``--resume`` that would change the run: a resumed run continues with its own
    ``config.yaml``, so a key given on the command line (or in ``--config``) must have the value stored there.

    Raises:
        ConfigError: naming the first key that differs, its stored value and the one given.
    """
    stored_path = Path(run_dir) / "config.yaml"
    if not stored_path.is_file():
        return  # nothing stored to compare with: check_run_dir explains
    given = dict(overrides)
    if config_file is not None:  # the keys the file sets, with their resolved values
        written = dotted_items(yaml.safe_load(Path(config_file).read_text()) or {})
        resolved = dotted_items(load_config(config_file).to_dict())
        given = {key: resolved[key] for key in written if key in resolved} | given
    stored = load_config(stored_path).to_dict()
    difference = first_difference(stored, load_config(stored_path, given).to_dict())
    if difference is not None:
        key, there, here = difference
        raise ConfigError(
            f"{run_dir}: --resume continues the run with its own config.yaml, where {key} is {there!r}, not "
            f"{here!r} (drop the option, or train a new run into another --out)"
        )


def _check_batch_shares(config: RunConfig, world: World) -> None:
    """Refuse a batch that does not split evenly over the processes of a data-parallel run."""
    if config.train.batch_size % world.size:
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} does not split evenly over {world.size} processes"
        )


def load_run_case(case: Case, config: RunConfig) -> LoadedCase:
    """``case`` read as the run reads it: with its ``label_map`` and input ``preprocess.channel``."""
    return load_case(case, config.label_map, config.preprocess.channel)


def _without_label(loaded: LoadedCase) -> LoadedCase:
    return replace(loaded, label=None)


def _check_label_free_split(split: dict[str, list[str]]) -> None:
    """Refuse a given split with training or validation cases for a run without labels: their labels would
    train the student or choose its checkpoint."""
    labeled = [f"{len(split[part])} {part}" for part in ("train", "val") if split[part]]
    if labeled:
        raise ConfigError(
            f"distill.no_labels: the split lists {' and '.join(labeled)} cases, whose labels a run without labels "
            "may not use; give a split with test cases only (or none: the labeled cases of --sites are tested)"
        )


def _draw_split(index: CaseIndex, config: RunConfig) -> dict[str, list[str]]:
    """The configured split, with the training part restricted to ``config.sites`` / ``config.max_cases``; for a
    run without labels, the labeled cases of ``config.sites`` as test cases
    (:func:`~prokd.data.splits.site_test_split`)."""
    if config.no_labels:
        return site_test_split(index.labeled, config.sites)
    if not index.labeled:
        raise ConfigError(f"{index.root}: no labeled cases to train on")
    split = make_split(index.labeled, config.split, config.train.seed)
    split["train"] = restrict(
        split["train"], index.labeled, sites=config.sites, max_cases=config.max_cases, seed=config.train.seed
    )
    if not split["train"]:
        raise ConfigError(f"no training cases left after restricting to sites={config.sites} max_cases={config.max_cases}")
    return split
