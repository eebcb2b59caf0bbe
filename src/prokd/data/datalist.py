"""Datasets as lists of cases: MONAI-style datalist JSON, MSD folders and nnU-Net v2 raw folders.

Three sources are accepted by :func:`load_cases`:

1. a datalist JSON file (the MONAI / Medical Segmentation Decathlon ``dataset.json`` layout)::

       {"training":  [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz", "site": "A"}, ...],
        "validation": [...],                       # optional, labeled like "training"
        "unlabeled": ["imagesUn/b.nii.gz", ...],   # optional, path strings or {"image", "site"?, "case"?}
        "test":      [...]}                        # optional, test images in the form of "unlabeled"

   with paths relative to the JSON's folder (absolute paths allowed);
2. a folder holding such a ``dataset.json`` (MSD task folders are of this kind);
3. an MSD or nnU-Net v2 folder whose ``dataset.json`` has no ``training`` list: ``imagesTr/`` and
   ``labelsTr/`` are paired by case id and ``imagesTs/`` gives test images. nnU-Net names
   images ``{case}_0000.nii.gz`` and labels ``{case}.nii.gz``; MSD uses the same name in both.

Test images (a datalist's ``test`` entries, an MSD/nnU-Net ``imagesTs/``) are kept apart from the
``unlabeled`` images (:attr:`CaseIndex.test`): ``data check`` and prediction see them, but a
distillation uses them as unlabeled training images only when its run config says so
(``unlabeled_include_test``, ``--unlabeled test``), so a test image never reaches training unasked. To
train on images without labels, list them under ``unlabeled``.

A case id is the entry's ``"case"`` key, else the image file name without its suffix and without
nnU-Net's ``_0000`` channel tag. A case is one image file (nnU-Net's one file per modality is not
supported); of a 4D image (MSD Task05_Prostate: T2 and ADC) :func:`load_case` reads one ``channel``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prokd.config import ConfigError
from prokd.data.io import SUPPORTED_SUFFIXES, Geometry, VolumeError, non_finite_problem, volume_suffix
from prokd.data.orientation import read_canonical

LABELED_KEYS = ("training", "validation")
UNLABELED_KEYS = ("unlabeled",)
TEST_KEYS = ("test",)
GRID_TOLERANCE_MM = 1e-4
_CHANNEL_TAG = re.compile(r"(?P<case>.+)_\d{4}")
UNKNOWN_SITE = "unknown"
"""The site of a case whose source names none."""


class DatasetError(ValueError):
    """A dataset description or one of its cases is invalid; the message is one line naming the file."""


@dataclass(frozen=True)
class Case:
    """One volume and, for labeled cases, its binary mask."""

    case_id: str
    image: Path
    label: Path | None
    site: str = UNKNOWN_SITE


@dataclass
class CaseIndex:
    """The cases of a dataset, labeled, unlabeled and test images, in the order the source lists them.

    Attributes:
        root: the folder paths are relative to (the datalist's folder, or the MSD/nnU-Net folder).
        labeled: cases with a label.
        unlabeled: cases with an image only, listed for training without labels.
        test: test images, without labels (a datalist's ``test`` entries, ``imagesTs/``); never training
            images unless a run asks for them.
    """

    root: Path
    labeled: list[Case]
    unlabeled: list[Case]
    test: list[Case] = field(default_factory=list)

    def sites(self) -> list[str]:
        """The sorted sites of the labeled cases."""
        return sorted({case.site for case in self.labeled})

    def case(self, case_id: str) -> Case:
        """The labeled, unlabeled or test case with this id.

        Raises:
            KeyError: no case has this id.
        """
        for case in (*self.labeled, *self.unlabeled, *self.test):
            if case.case_id == case_id:
                return case
        raise KeyError(f"{self.root}: no case '{case_id}' in this dataset")

    def select(self, case_ids: Iterable[str]) -> list[Case]:
        """The cases with these ids, in the given order."""
        return [self.case(case_id) for case_id in case_ids]


@dataclass
class LoadedCase:
    """A case read into memory.

    Attributes:
        case: where it came from.
        image: ``(Z, Y, X)`` float32 intensities, all finite.
        label: ``(Z, Y, X)`` uint8 mask in {0, 1} on the image's grid, or ``None`` for unlabeled cases.
        geometry: the voxel geometry of ``image``.

    Image and label are in the canonical orientation of :mod:`prokd.data.orientation` (axial slices along
    axis 0), whatever the files' axis order; ``geometry`` describes the canonical array.
    """

    case: Case
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry


def load_cases(source: str | Path, *, require_files: bool = True) -> CaseIndex:
    """Index a dataset from a datalist JSON file, a folder with a ``dataset.json``, or an MSD/nnU-Net folder.

    Args:
        source: the datalist file or dataset folder.
        require_files: raise when a listed image or label file is missing. Pass False to index the
            dataset anyway and let :func:`load_case` report each missing file (as ``prokd data check`` does).

    Raises:
        DatasetError: naming the datalist (or folder) and the entry at fault.
    """
    source = Path(source)
    if source.is_file():
        return _index_datalist(source, _read_json(source), require_files)
    if not source.is_dir():
        raise DatasetError(f"{source}: no such file or folder")
    listing = source / "dataset.json"
    if listing.is_file():
        data = _read_json(listing)
        if "training" in data:
            return _index_datalist(listing, data, require_files)
    if (source / "imagesTr").is_dir():
        return _index_folders(source, require_files)
    raise DatasetError(f"{source}: found neither a dataset.json with a 'training' list nor an imagesTr/ folder")


def load_case(case: Case, label_map: dict[int, int] | None = None, channel: int | None = None) -> LoadedCase:
    """Read and validate one case, in the canonical orientation (:func:`prokd.data.orientation.read_canonical`).

    Image and label are compared in the canonical frame, so a label stored in another axis order than its
    image is accepted when it covers the same voxels in space.

    Args:
        case: the case to read.
        label_map: label value → 0 or 1, for labels with values other than {0, 1} (e.g. ``{1: 1, 2: 1}``
            merges two zones). Background 0 maps to 0 unless listed; any other value present must be listed.
        channel: the channel of a multi-channel image (e.g. 0 for T2 in MSD Task05_Prostate); labels are 3D.

    Raises:
        DatasetError: ``"<file>: <problem>"`` for an unreadable file, a multi-channel image without
            ``channel``, non-finite intensities, a label whose shape or grid differs from the image's, or
            label values outside {0, 1} and ``label_map``.
        ConfigError: ``label_map`` maps a value to something other than 0 or 1.
    """
    mapping = _label_mapping(label_map)
    raw_image, geometry = _read(case.image, channel)
    image = raw_image.astype(np.float32)
    problem = non_finite_problem(image)
    if problem:
        raise DatasetError(f"{case.image}: {problem}")
    if case.label is None:
        return LoadedCase(case, image, None, geometry)
    label, label_geometry = _read(case.label)
    if label.shape != image.shape:
        raise DatasetError(f"{case.label}: label shape {label.shape} differs from the image's {image.shape}")
    if not label_geometry.same_grid(geometry, tol=GRID_TOLERANCE_MM):
        difference = _grid_difference(label_geometry, geometry)
        raise DatasetError(f"{case.label}: label grid differs from the image's ({difference})")
    return LoadedCase(case, image, _binary_label(label, case.label, mapping, label_map is not None), geometry)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: cannot read datalist JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a datalist must be a JSON object, got {type(data).__name__}")
    return data


def _index_datalist(datalist: Path, data: dict[str, Any], require_files: bool) -> CaseIndex:
    if not isinstance(data.get("training"), list):
        raise DatasetError(f"{datalist}: needs a 'training' list of {{'image', 'label'}} entries")
    labeled = _listed_cases(datalist, data, LABELED_KEYS, True, require_files)
    unlabeled = _listed_cases(datalist, data, UNLABELED_KEYS, False, require_files)
    test = _listed_cases(datalist, data, TEST_KEYS, False, require_files)
    _require_unique_ids(datalist, labeled + unlabeled + test)
    return CaseIndex(datalist.parent, *([case for _, case in listed] for listed in (labeled, unlabeled, test)))


def _listed_cases(
    datalist: Path, data: dict[str, Any], keys: tuple[str, ...], labeled: bool, require_files: bool
) -> list[tuple[str, Case]]:
    """``(where, case)`` for every entry under ``keys``; ``where`` names it, e.g. ``training[3]``."""
    return [
        (f"{key}[{i}]", _datalist_case(datalist, f"{key}[{i}]", entry, labeled, require_files))
        for key in keys
        for i, entry in enumerate(_entries(datalist, data, key))
    ]


def _entries(datalist: Path, data: dict[str, Any], key: str) -> list[Any]:
    entries = data.get(key) or []
    if not isinstance(entries, list):
        raise DatasetError(f"{datalist}: '{key}' must be a list, got {type(entries).__name__}")
    return entries


def _datalist_case(datalist: Path, where: str, entry: Any, labeled: bool, require_files: bool) -> Case:
    if isinstance(entry, str) and not labeled:
        entry = {"image": entry}
    if not isinstance(entry, dict):
        expected = "an object with 'image' and 'label'" if labeled else "a path or an object with 'image'"
        raise DatasetError(f"{datalist}: {where} must be {expected}, got {entry!r}")
    fields = {key: _text_field(datalist, where, entry, key) for key in ("image", "label", "case", "site")}
    for key in ("image", "label") if labeled else ("image",):
        if fields[key] is None:
            raise DatasetError(f"{datalist}: {where} has no '{key}'")
    image = _listed_file(datalist, where, fields["image"], require_files)
    label = _listed_file(datalist, where, fields["label"], require_files) if labeled else None
    return Case(fields["case"] or _case_id(image), image, label, fields["site"] or UNKNOWN_SITE)


def _text_field(datalist: Path, where: str, entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"{datalist}: {where} '{key}' must be a string, got {value!r}")
    return value


def _listed_file(datalist: Path, where: str, listed: str, require_files: bool) -> Path:
    """``listed`` resolved against the datalist's folder, checked for a supported suffix (and existence)."""
    path = datalist.parent / listed
    try:
        volume_suffix(path)
    except VolumeError as err:
        raise DatasetError(f"{datalist}: {where}: {err}") from err
    if require_files and not path.is_file():
        raise DatasetError(f"{datalist}: {where}: file not found: {path}")
    return path


def _index_folders(root: Path, require_files: bool) -> CaseIndex:
    """Pair ``imagesTr/`` with ``labelsTr/`` by case id; ``imagesTs/`` holds test images."""
    images = _volumes_by_case(root / "imagesTr", channel_tagged=True)
    if not images:
        raise DatasetError(f"{root / 'imagesTr'}: no volume files")
    labels = _volumes_by_case(root / "labelsTr", channel_tagged=False)
    labeled = []
    for case_id, image in images.items():
        expected = root / "labelsTr" / f"{case_id}{volume_suffix(image)}"
        if require_files and case_id not in labels:
            raise DatasetError(f"{image}: no label for case '{case_id}' (expected {expected})")
        labeled.append(Case(case_id, image, labels.get(case_id, expected)))
    test = [Case(case_id, image, None) for case_id, image in _volumes_by_case(root / "imagesTs", True).items()]
    _require_unique_ids(root, [(str(case.image), case) for case in labeled + test])
    return CaseIndex(root, labeled, [], test)


def _volumes_by_case(folder: Path, channel_tagged: bool) -> dict[str, Path]:
    """Volume files of ``folder`` (hidden files skipped) by case id, sorted; ``{}`` when it is absent.

    With ``channel_tagged``, nnU-Net's ``{case}_{XXXX}`` channel tag is removed; a case with several
    files (several channels) is an error.
    """
    if not folder.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.lower().endswith(SUPPORTED_SUFFIXES):
            continue
        stem = path.name[: -len(volume_suffix(path))]
        tagged = _CHANNEL_TAG.fullmatch(stem) if channel_tagged else None
        found.setdefault(tagged["case"] if tagged else stem, []).append(path)
    for case_id, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise DatasetError(
                f"{folder}: case '{case_id}' has several files ({names}); only single-modality datasets are supported"
            )
    return {case_id: paths[0] for case_id, paths in sorted(found.items())}


def _case_id(image: Path) -> str:
    """The file name without its volume suffix and without nnU-Net's ``_0000`` channel tag."""
    stem = image.name[: -len(volume_suffix(image))]
    return stem[: -len("_0000")] if stem.endswith("_0000") else stem


def _require_unique_ids(source: Path, located: list[tuple[str, Case]]) -> None:
    seen: dict[str, str] = {}
    for where, case in located:
        if case.case_id in seen:
            raise DatasetError(f"{source}: duplicate case id '{case.case_id}' ({seen[case.case_id]} and {where})")
        seen[case.case_id] = where


def _read(path: Path, channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """The canonical array and its geometry."""
    try:
        volume = read_canonical(path, channel)
    except VolumeError as err:
        raise DatasetError(str(err)) from err
    return volume.array, volume.geometry


def _label_mapping(label_map: dict[int, int] | None) -> dict[int, int]:
    """Value → 0/1 for every allowed label value: {0, 1} without a map, 0 plus the map's keys with one."""
    if label_map is None:
        return {0: 0, 1: 1}
    for value, target in label_map.items():
        if target not in (0, 1):
            raise ConfigError(f"'label_map' must map label values to 0 or 1, got {value}: {target}")
    return {0: 0, **label_map}


def _binary_label(label: np.ndarray, path: Path, mapping: dict[int, int], mapped: bool) -> np.ndarray:
    """``label`` ``(Z, Y, X)`` mapped through ``mapping`` to a uint8 mask."""
    values = np.unique(label)
    unknown = [value for value in values if value not in mapping]
    if unknown:
        allowed = "label_map" if mapped else "{0, 1} (pass a label_map to map them)"
        found = _format_values(values)
        raise DatasetError(f"{path}: label values {_format_values(unknown)} are not in {allowed}; found {found}")
    mask = np.zeros(label.shape, dtype=np.uint8)
    for value in values:
        if mapping[value]:
            mask[label == value] = 1
    return mask


def _format_values(values: Iterable[Any], shown: int = 8) -> str:
    values = [f"{value:g}" for value in values]
    more = f", ... ({len(values)} values)" if len(values) > shown else ""
    return ", ".join(values[:shown]) + more


def _grid_difference(label: Geometry, image: Geometry) -> str:
    """The differing attributes among spacing, origin and direction, as ``"<name> <label's> vs <image's>"``."""
    pairs = {name: (getattr(label, name), getattr(image, name)) for name in ("spacing", "origin", "direction")}
    return "; ".join(
        f"{name} {_format_vector(ours)} vs {_format_vector(theirs)}"
        for name, (ours, theirs) in pairs.items()
        if _differ(ours, theirs)
    )


def _differ(ours: tuple[float, ...] | None, theirs: tuple[float, ...] | None) -> bool:
    if ours is None or theirs is None:
        return (ours is None) != (theirs is None)
    return not np.allclose(ours, theirs, rtol=0.0, atol=GRID_TOLERANCE_MM)


def _format_vector(values: tuple[float, ...] | None) -> str:
    return "unknown" if values is None else "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
