"""Typed run configuration: dataclasses with defaults, YAML loading and validation that names the key.

A run's resolved config (defaults filled in) is written to ``RUN/config.yaml`` and stored in every
checkpoint, so that a checkpoint alone is enough to rebuild the model and its preprocessing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prokd.files import atomic_write_text


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


@dataclass
class PreprocessConfig:
    """How a volume becomes the network's canonical in-plane grid (see :mod:`prokd.data.preprocess`).

    Attributes:
        size: side of the square in-plane grid the network sees, in pixels.
        target_spacing: in-plane spacing in mm to resample to when the volume's spacing is known;
            ``None`` resizes every slice to ``size`` instead (the only option for unknown spacing).
        crop_fraction: optional centre crop, as a fraction of the field of view, applied before resizing
            when the spacing is unknown (``None`` or 1.0 keeps the whole field of view).
        clip_percentiles: intensity percentiles clipped before z-scoring, per volume.
        context: number of neighbouring slices on each side stacked as input channels (2.5D);
            the network gets ``2 * context + 1`` channels.
        channel: the channel read from multi-channel (4D) volumes, e.g. 0 for T2 in MSD Task05_Prostate
            (1 is ADC); ``None`` for single-channel data, where a multi-channel volume is an error.
    """

    size: int = 160
    target_spacing: float | None = None
    crop_fraction: float | None = None
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    context: int = 0
    channel: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.clip_percentiles
        _require(self.size >= 16, "preprocess.size", "must be at least 16")
        _require(0.0 <= lo < hi <= 100.0, "preprocess.clip_percentiles", "must satisfy 0 <= low < high <= 100")
        _require(self.context >= 0, "preprocess.context", "must be >= 0")
        _require(self.channel is None or self.channel >= 0, "preprocess.channel", "must be >= 0")
        if self.target_spacing is not None:
            _require(self.target_spacing > 0, "preprocess.target_spacing", "must be positive")
        if self.crop_fraction is not None:
            _require(0.1 <= self.crop_fraction <= 1.0, "preprocess.crop_fraction", "must be in [0.1, 1]")

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1


@dataclass
class AugmentConfig:
    """Random 2D augmentation applied to training slices (MONAI transforms); probabilities per slice.

    ``zoom_fill``: what surrounds a zoomed-out slice, ``edge`` (its border repeated) or ``dark`` (empty space, as
    around the body in a wider field of view; :data:`prokd.data.augment.ZOOM_FILLS`). ``intensity_strength``
    scales how far the intensity transforms reach (1: intensity scale and shift ±0.2, bias-field coefficients up to
    0.3, gamma 0.7-1.5, noise sd 0.1; 2: ±0.4, 0.6, gamma 0.7²-1.5², sd 0.2), for models meant to work on other
    sites' contrast (:func:`prokd.data.augment.intensity_transforms`)."""

    enabled: bool = True
    flip_prob: float = 0.5
    affine_prob: float = 0.8
    rotate_degrees: float = 15.0
    zoom_range: tuple[float, float] = (0.6, 1.6)
    zoom_fill: str = "edge"
    translate_fraction: float = 0.1
    intensity_prob: float = 0.5
    bias_field_prob: float = 0.3
    noise_prob: float = 0.2
    contrast_prob: float = 0.3
    intensity_strength: float = 1.0

    def __post_init__(self) -> None:
        _require(self.zoom_fill in ("edge", "dark"), "augment.zoom_fill", "must be 'edge' or 'dark'")
        _require(0 < self.intensity_strength <= 4, "augment.intensity_strength", "must be in (0, 4]")


@dataclass
class ModelConfig:
    """A registry model by name plus keyword overrides (see :mod:`prokd.models.registry`)."""

    name: str = "unet-small"
    out_channels: int = 1
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.out_channels in (1, 2), "model.out_channels", "must be 1 (sigmoid) or 2 (softmax)")


@dataclass
class LossConfig:
    """Weights of the supervised segmentation terms.

    Cross-entropy is on by default: on the phantom, Dice + Lovász + CE reached 0.886 validation Dice in a
    72 s student run where Dice + Lovász alone reached 0.81 (CE gives dense, calibrated early gradients).
    ``lovasz_warmup`` is the fraction of training over which the Lovász weight ramps up from 0 (see
    :mod:`prokd.losses.segmentation`); on PROMISE12 (``configs/promise12.yaml``, unet-small, 3 seeds) 0.3 leaves
    the plateau of the Lovász hinge sooner (higher validation Dice from step 400 to 1000), and after 1500 steps
    reaches the same test Dice as 0 (0.833 ± 0.017 vs 0.825 ± 0.007): it matters for short budgets.
    """

    dice: float = 1.0
    lovasz: float = 1.0
    ce: float = 1.0
    lovasz_warmup: float = 0.3

    def __post_init__(self) -> None:
        _require(0.0 <= self.lovasz_warmup < 1.0, "loss.lovasz_warmup", "must be in [0, 1)")


@dataclass
class SplitConfig:
    """Case-level split of the labeled cases (see :mod:`prokd.data.splits`).

    ``mode`` is ``holdout`` (site-stratified train/val/test fractions), ``kfold`` (``fold`` of ``folds``)
    or ``loso`` (leave ``test_site`` out; validation is drawn from the other sites).
    """

    mode: str = "holdout"
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    folds: int = 5
    fold: int = 0
    test_site: str | None = None

    def __post_init__(self) -> None:
        _require(self.mode in ("holdout", "kfold", "loso"), "split.mode", "must be holdout, kfold or loso")
        _require(0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1, "split", "fractions must be in [0, 1)")
        _require(0 <= self.fold < self.folds, "split.fold", f"must be in [0, {self.folds})")
        if self.mode == "loso":
            _require(self.test_site is not None, "split.test_site", "is required when split.mode is loso")


@dataclass
class TrainConfig:
    """Optimisation schedule. A run lasts ``epochs`` epochs of ``steps_per_epoch`` steps, or stops
    earlier when ``time_budget_minutes`` is spent (the cosine schedule is then laid over the budget).

    The learning rate warms up linearly over the first ``warmup_fraction`` of the run's progress (steps or
    minutes alike; 0.025 is the one epoch of the default 40), then decays along a cosine. ``warmup_epochs``, when
    set, replaces it by ``warmup_epochs / epochs``: the rule of configs written before ``warmup_fraction``
    existed, kept so that they resume and compare unchanged; it is no warm-up at all for a minute budget with
    unbounded epochs.

    ``threads``: torch's CPU threads; None uses ``OMP_NUM_THREADS`` when set, else the cores the process may run on
    (affinity, cgroup quota; :mod:`prokd.threads`).
    """

    epochs: int = 40
    steps_per_epoch: int = 100
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.025
    warmup_epochs: int | None = None
    time_budget_minutes: float | None = None
    foreground_fraction: float = 0.7
    val_every: int = 1
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "must be >= 1")
        _require(self.steps_per_epoch >= 1, "train.steps_per_epoch", "must be >= 1")
        _require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _require(math.isfinite(self.lr) and self.lr > 0, "train.lr", "must be a finite positive number")
        _require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "train.weight_decay",
                 "must be a finite number >= 0")
        _require(self.time_budget_minutes is None or (math.isfinite(self.time_budget_minutes)
                                                      and self.time_budget_minutes > 0),
                 "train.time_budget_minutes", "must be a finite positive number of minutes (or unset)")
        _require(self.val_every >= 1, "train.val_every", "must be >= 1")
        _require(self.threads is None or self.threads >= 1, "train.threads", "must be >= 1 (or unset)")
        _require(0.0 <= self.warmup_fraction < 1.0, "train.warmup_fraction", "must be in [0, 1)")
        _require(self.warmup_epochs is None or self.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0")
        _require(0.0 <= self.foreground_fraction <= 1.0, "train.foreground_fraction", "must be in [0, 1]")


@dataclass
class PostprocessConfig:
    """Whole-volume prediction and post-processing of its masks.

    Attributes:
        threshold: foreground probability above which a voxel is gland.
        largest_component: keep the largest 3D connected component only.
        flip_tta: average with the prediction of the left-right mirrored slices.
        relocate: passes of locate-then-segment after the first prediction (:mod:`prokd.infer.framing`): while
            the gland found appears on the grid larger or smaller than in training, predict again on a square box
            around it, scaled so that it does not. Each pass taken costs one more prediction. 0: off.
        gland_extents: ``(low, high)``, the range of the gland's extent on the grid over the training cases, as
            fractions of the grid's side; measured when a run is trained, so it need not be given.
        framings: zooms about the image centre the first prediction is made at (:mod:`prokd.infer.framing`): 1 the
            volume's own framing, 2 the central half of its field of view (for a field of view twice as wide as in
            training), 0.5 twice its field of view; with several, the most confident prediction is kept (the first
            listed on a tie). Each costs one prediction of the volume.
    """

    threshold: float = 0.5
    largest_component: bool = True
    flip_tta: bool = False
    relocate: int = 0
    gland_extents: tuple[float, float] | None = None
    framings: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        _require(self.relocate >= 0, "postprocess.relocate", "must be 0 (off) or a number of passes")
        _require(bool(self.framings) and min(self.framings) > 0, "postprocess.framings",
                 "must list at least one zoom, each positive")
        if self.gland_extents is not None:
            low, high = self.gland_extents
            _require(0 < low <= high <= 1, "postprocess.gland_extents", "must satisfy 0 < low <= high <= 1")


@dataclass
class DistillConfig:
    """Knowledge distillation from frozen teachers (see :mod:`prokd.distill`).

    Attributes:
        teachers: RUN folders (or folders of RUN folders) of the frozen teachers.
        temperature: softening temperature T of the output KL (the term is scaled by T²).
        kl: weight of the KL between the student and the aggregated teacher outputs.
        feature: weight of the feature term (0 disables it).
        pseudo: weight of the segmentation loss (Dice + Lovász + CE) against the aggregated teachers' mask
            (foreground probability at T = 1 above 0.5) on unlabeled slices (0 disables it).
        pseudo_foreground_only: apply the pseudo-label term only to unlabeled slices where that mask has
            foreground. Unlabeled slices are drawn uniformly (labeled ones mostly with foreground), so most of
            them have an empty mask, whose Dice + Lovász + CE pull the student towards predicting nothing: in
            the phantom demo a student distilled with it never found the gland (test Dice 0.46, seed 1). Slices
            left out still get the KL term. Off by default, so recipes written before it keep their meaning.
        pseudo_joint: put the pseudo-labeled slices into the same segmentation loss as the labeled ones, so
            each counts once, as a labeled slice does (needs ``pseudo`` = 1). As a separate term, the one or two
            unlabeled slices of a batch weigh as much as all its labeled ones, and their noisy gradient slowed
            the students. In exploratory runs, not a benchmark (phantom, 80² at 2 mm, 450 steps, 20 test cases,
            seed 0): test Dice 0.73 separate vs 0.80 joint with one teacher and 25 % unlabeled slices, and 0.77 vs
            0.81 for a student with 4 labeled cases and two 7-case teachers (0.75 from scratch). Off by default,
            as above.
        feature_term: registered feature term: ``hint``, ``attention`` or ``affinity``.
        feature_kwargs: keyword arguments of the feature term.
        student_taps / teacher_taps: module names of the feature taps; None uses the registry's defaults.
        restrict: ``none``, ``uncertain`` (pixels where the aggregated teacher is unsure) or ``boundary``
            (a band around the aggregated teacher mask) for the KL term.
        boundary_width: half-width in pixels of the boundary band.
        aggregate: multi-teacher aggregation mode (``mean``, ``weighted``, ``site``, ``trust``, ``adaptive``,
            ``entropy``, ``confidence-max``, ``agreement``, ``learned``; see :mod:`prokd.distill.aggregate`).
            ``trust`` measures the teachers on the unlabeled images, so it needs some (``unlabeled_fraction``
            > 0, or ``no_labels``).
        aggregate_kwargs: keyword arguments of the aggregator.
        infer_sites: give the unlabeled images that have no site the site inferred from the teachers' features
            (:mod:`prokd.distill.site_inference`) before training, so that the ``site`` aggregation weighs the
            teachers on them by their scores on that site (an image of unknown site gets the teachers' mean scores
            otherwise). Needs ``aggregate: site``, unlabeled images (``unlabeled_fraction`` > 0) and teachers
            trained on one site each; the inferred sites are written to ``RUN/inferred_sites.json``.
        gate: weight of the learned gate's own loss on labeled slices (``learned`` only).
        consistency: weight of the weak-to-strong consistency term on unlabeled slices (0 disables it;
            :mod:`prokd.distill.consistency`, FixMatch style): the student's prediction on a photometrically
            perturbed, pixel-aligned copy of each unlabeled slice must match the target on the slice itself
            (Bernoulli KL), on the pixels where that target is confident. Costs one more student forward pass on
            the unlabeled slices; needs ``unlabeled_fraction`` > 0.
        consistency_threshold: a target pixel is confident when its foreground probability is above this or
            below 1 minus this; in [0.5, 1).
        consistency_target: where the target comes from: ``student`` (the student's own prediction on the
            slice, detached, as in FixMatch) or ``teachers`` (the aggregated teachers at T = 1).
        unlabeled_fraction: share of each batch drawn from unlabeled images (KD terms only).
        no_labels: learn from no label at all (regime C: a site whose cases have none, taught by teachers
            trained on other sites). Every slice comes from an image used without its label: the run's test cases
            (transductive: their images, never their labels) and the dataset's unlabeled images, both from the
            run's ``sites`` when given (images without a site are then left out); the loss is the KD terms alone.
            A drawn split makes the labeled cases of ``sites`` (all sites when unset) the test cases, with no
            training or validation case; a given split must list test cases only. Without validation cases the
            last checkpoint is the best (:mod:`prokd.train.loop`). Needs a term that teaches the student's output
            without labels (``kl``, ``pseudo``, or ``consistency`` with ``consistency_target: teachers``), and
            excludes ``unlabeled_fraction`` (every slice is unlabeled), the ``learned`` aggregation (its gate
            learns on labeled slices) and ``max_cases``.
        cache_teachers: compute each teacher's logits once per (un-augmented) slice and move them with the slice
            through the spatial augmentation (the teacher forward pass dominates a KD step on a CPU); kept in memory
            and on disk under ``RUN/checkpoints/teacher-logits/`` (keyed by the teacher checkpoint's hash and the
            case), so students of one experiment share them; logits only, so the feature term must be off.
        calibrate: divide each teacher's logits by its temperature fitted on its own validation cases
            (:mod:`prokd.eval.calibration`, stored as ``RUN/calibration.json``), before the distillation
            temperature: aggregation, KL and pseudo-labels see calibrated probabilities. Masks do not change.
    """

    teachers: list[str] = field(default_factory=list)
    temperature: float = 2.0
    kl: float = 1.0
    feature: float = 0.0
    pseudo: float = 0.0
    pseudo_foreground_only: bool = False
    pseudo_joint: bool = False
    feature_term: str = "attention"
    feature_kwargs: dict[str, Any] = field(default_factory=dict)
    student_taps: list[str] | None = None
    teacher_taps: list[str] | None = None
    restrict: str = "none"
    boundary_width: int = 3
    aggregate: str = "mean"
    aggregate_kwargs: dict[str, Any] = field(default_factory=dict)
    infer_sites: bool = False
    gate: float = 1.0
    consistency: float = 0.0
    consistency_threshold: float = 0.9
    consistency_target: str = "student"
    unlabeled_fraction: float = 0.0
    no_labels: bool = False
    cache_teachers: bool = False
    calibrate: bool = False

    def __post_init__(self) -> None:
        _require(self.temperature > 0, "distill.temperature", "must be positive")
        _require(min(self.kl, self.feature, self.pseudo, self.consistency) >= 0, "distill", "term weights must be >= 0")
        _require(self.restrict in ("none", "uncertain", "boundary"), "distill.restrict", "must be none, uncertain or boundary")
        _require(not self.pseudo_joint or self.pseudo == 1.0, "distill.pseudo_joint",
                 "needs pseudo: 1 (pseudo-labeled slices then weigh as labeled ones)")
        _require(0.0 <= self.unlabeled_fraction < 1.0, "distill.unlabeled_fraction", "must be in [0, 1)")
        _require(self.consistency == 0 or self.unlabeled_share > 0, "distill.consistency",
                 "applies to unlabeled slices only (set distill.unlabeled_fraction > 0)")
        _require(0.5 <= self.consistency_threshold < 1.0, "distill.consistency_threshold",
                 "must be in [0.5, 1) (confident: foreground probability above it or below 1 minus it)")
        _require(self.consistency_target in ("student", "teachers"), "distill.consistency_target",
                 "must be student or teachers")
        _require(self.aggregate != "trust" or self.unlabeled_share > 0, "distill.aggregate",
                 "trust is measured on unlabeled images (set distill.unlabeled_fraction > 0, or no_labels)")
        _require(not self.infer_sites or (self.aggregate == "site" and self.unlabeled_share > 0),
                 "distill.infer_sites", "needs aggregate: site and unlabeled images (unlabeled_fraction > 0)")
        _require(not (self.cache_teachers and self.feature > 0), "distill.cache_teachers",
                 "caches the teachers' logits only; the feature term needs their forward pass (set distill.feature: 0)")
        if self.no_labels:
            self._check_label_free()

    @property
    def teaches_without_labels(self) -> bool:
        """Whether a term carries the teachers' output to the student on unlabeled slices: the KL, the
        pseudo-label term, or consistency towards the teachers (features alone leave the student's head untaught)."""
        towards_teachers = self.consistency > 0 and self.consistency_target == "teachers"
        return self.kl > 0 or self.pseudo > 0 or towards_teachers

    @property
    def unlabeled_share(self) -> float:
        """The share of each batch drawn from unlabeled images: all of it with ``no_labels``."""
        return 1.0 if self.no_labels else self.unlabeled_fraction

    def _check_label_free(self) -> None:
        """The settings a run without labels refuses (see ``no_labels``)."""
        _require(self.teaches_without_labels, "distill.no_labels",
                 "needs a term that teaches without labels: distill.kl or distill.pseudo > 0 (or distill.consistency "
                 "> 0 with consistency_target: teachers)")
        _require(self.unlabeled_fraction == 0, "distill.unlabeled_fraction",
                 "must stay 0 with distill.no_labels: every slice is drawn from unlabeled images")
        _require(self.aggregate != "learned", "distill.aggregate",
                 "learned trains its gate on labeled slices; distill.no_labels has none (choose another aggregation)")


@dataclass
class RunConfig:
    """Everything that defines one training run.

    Besides the sections, four keys choose the data:

    Attributes:
        sites: train on the labeled cases of these sites only (None: all sites); with ``distill.no_labels``, the
            sites the student learns without labels, whose labeled cases are its test cases.
        max_cases: train on at most this many labeled cases, chosen site-stratified (None: all).
        label_map: label value → 0 or 1, for labels other than {0, 1} (e.g. ``{1: 1, 2: 1}`` merges zones).
        unlabeled_include_test: a distillation also draws its unlabeled images from the dataset's test images
            (a datalist's ``test`` entries, ``imagesTs/``); by default only images listed under ``unlabeled``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    distill: DistillConfig | None = None
    sites: list[str] | None = None
    max_cases: int | None = None
    label_map: dict[int, int] | None = None
    unlabeled_include_test: bool = False

    def __post_init__(self) -> None:
        _require(self.max_cases is None or not self.no_labels, "max_cases",
                 "keeps the labels of K training cases; a run with distill.no_labels keeps none")

    @property
    def no_labels(self) -> bool:
        """Whether the run learns from no label (``distill.no_labels``)."""
        return self.distill is not None and self.distill.no_labels

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        return from_dict(cls, data or {}, prefix="")


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (missing keys take defaults) and apply dotted-key ``overrides``.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read YAML config ({err})") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = resolve_teacher_paths(loaded or {}, path.parent)
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    try:
        return RunConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from err


def resolve_teacher_paths(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """``data`` with relative ``distill.teachers`` paths made absolute against ``root``, the folder of the YAML
    file they were written in (paths given on the command line are absolute already)."""
    distill = data.get("distill")
    if not isinstance(distill, dict) or not isinstance(distill.get("teachers"), list):
        return data
    teachers = [os.path.abspath(root / Path(t).expanduser()) if isinstance(t, str) else t for t in distill["teachers"]]
    return {**data, "distill": {**distill, "teachers": teachers}}


MISSING_KEY = "<missing>"
"""Stands for a key one side of :func:`first_difference` lacks."""


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first dotted key (``students[1].steps``) where ``old`` and ``new`` differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in [*new, *(k for k in old if k not in new)]:
            child = f"{key}.{name}" if key else str(name)
            found = first_difference(old.get(name, MISSING_KEY), new.get(name, MISSING_KEY), child)
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            before, after = (items[i] if i < len(items) else MISSING_KEY for items in (old, new))
            found = first_difference(before, after, f"{key}[{i}]")
            if found is not None:
                return found
        return None
    return None if old == new else (key or "experiment", old, new)


def dotted_items(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``); sections with
    free-form keys (``model.kwargs``, ``distill.aggregate_kwargs``) stay whole."""
    items: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key not in FREE_FORM_KEYS:
            items.update(dotted_items(value, f"{dotted}."))
        else:
            items[dotted] = value
    return items


FREE_FORM_KEYS = ("kwargs", "aggregate_kwargs")


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        if not isinstance(node.get(key), dict):  # absent, or a section left empty (``distill: null``)
            node[key] = {}
        node = node[key]
    node[leaf] = value


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved ``config`` as YAML to ``path``, atomically."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the dotted key and
    listing the valid keys.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (valid keys: {', '.join(fields)})")
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"'{key}' may not be null")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"'{key}' must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return {_coerce(args[0], k, key): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"'{key}' must be {hint.__name__}, got {value!r}")
    return value


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"'{key}' {message}")


def plain(value: Any) -> Any:
    """Tuples → lists, recursively, so YAML, JSON and ``torch.load(weights_only=True)`` see plain containers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
