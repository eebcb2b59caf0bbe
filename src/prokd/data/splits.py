"""Case-level train/val/test splits, stratified by site and deterministic from a seed.

Every split works on whole cases (patients), never on slices, so no slice of a test case can leak into
training. A split is a ``dict[str, list[str]]`` with keys ``"train"``, ``"val"`` and ``"test"``, each a
sorted list of case ids.

Per-site counts are apportioned with the largest-remainder (Hamilton) method, so the totals match the
requested fractions of the whole set as closely as integer counts allow, while each site contributes in
proportion to its size. Within a site, cases are shuffled by a generator seeded with ``(seed, site)``:
adding cases of one site leaves the assignment of the other sites unchanged.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from prokd.config import SplitConfig
from prokd.files import atomic_write_text

SPLIT_KEYS = ("train", "val", "test")


class SiteCase(Protocol):
    """Anything with a case id and the site (centre, scanner) it was acquired at."""

    case_id: str
    site: str


def holdout_split(
    cases: Iterable[SiteCase], val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[str]]:
    """Site-stratified train/val/test split with the given fractions of all cases.

    Every site with at least 3 cases gets at least one test case (if ``test_fraction > 0``) and one
    validation case (if ``val_fraction > 0``), even when that exceeds the fraction overall; every site
    keeps at least one training case.
    """
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    by_site = group_by_site(cases)
    sizes = {site: len(ids) for site, ids in by_site.items()}
    guaranteed = {site for site, size in sizes.items() if size >= 3}
    val_reserve = {site: int(val_fraction > 0 and site in guaranteed) for site in sizes}
    test_counts = _apportion(
        quotas={site: test_fraction * size for site, size in sizes.items()},
        capacity={site: size - 1 - val_reserve[site] for site, size in sizes.items()},
        at_least_one=guaranteed if test_fraction > 0 else (),
    )
    val_counts = _apportion(
        quotas={site: val_fraction * size for site, size in sizes.items()},
        capacity={site: size - 1 - test_counts[site] for site, size in sizes.items()},
        at_least_one=guaranteed if val_fraction > 0 else (),
    )
    split: dict[str, list[str]] = {key: [] for key in SPLIT_KEYS}
    for site, ids in by_site.items():
        n_test, n_val = test_counts[site], val_counts[site]
        order = _shuffled(ids, seed, site)
        split["test"] += order[:n_test]
        split["val"] += order[n_test : n_test + n_val]
        split["train"] += order[n_test + n_val :]
    return _sorted(split)


def kfold_split(
    cases: Iterable[SiteCase], folds: int = 5, fold: int = 0, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[str]]:
    """Site-stratified k-fold split: the test set is fold ``fold`` of ``folds``.

    Each site's shuffled cases are dealt round-robin over the folds, continuing the deal from one site to
    the next, so every site is spread evenly over the folds and fold sizes differ by at most one. The
    validation set is ``val_fraction`` of the remaining (non-test) cases, stratified by site.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, folds) with folds >= 2, got fold={fold}, folds={folds}")
    _check_fraction("val_fraction", val_fraction)
    by_site = group_by_site(cases)
    dealt = [case_id for site, ids in by_site.items() for case_id in _shuffled(ids, seed, site)]
    if folds > len(dealt):
        raise ValueError(f"cannot make {folds} folds from {len(dealt)} cases")
    return _split_off_validation(by_site, set(dealt[fold::folds]), val_fraction, seed)


def loso_split(
    cases: Iterable[SiteCase], test_site: str, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[str]]:
    """Leave-one-site-out: all cases of ``test_site`` are tested; validation is drawn from the other
    sites (``val_fraction`` of their cases, stratified by site).

    Raises:
        ValueError: ``test_site`` is not a site of ``cases`` (the message lists the sites), or it is the
            only site.
    """
    _check_fraction("val_fraction", val_fraction)
    by_site = group_by_site(cases)
    if test_site not in by_site:
        raise ValueError(f"unknown test site {test_site!r}; sites are: {', '.join(by_site)}")
    if len(by_site) == 1:
        raise ValueError(f"test site {test_site!r} is the only site; nothing is left to train on")
    return _split_off_validation(by_site, set(by_site[test_site]), val_fraction, seed)


def hold_out_site(split: Mapping[str, Sequence[str]], cases: Iterable[SiteCase], site: str) -> dict[str, list[str]]:
    """A saved split with ``site`` left out: its training and validation cases of the other sites are kept, every
    case of ``site`` in ``cases`` is tested (the leave-one-site-out split of models trained on the saved split).

    Raises:
        ValueError: ``site`` is not a site of ``cases`` (the message lists the sites), or no training case is left.
    """
    site_of = {case.case_id: case.site for case in cases}
    sites = sorted(set(site_of.values()))
    if site not in sites:
        raise ValueError(f"unknown test site {site!r}; sites are: {', '.join(sites)}")
    held_out = sorted(case_id for case_id, case_site in site_of.items() if case_site == site)
    kept = {part: sorted(i for i in split[part] if site_of.get(i) != site) for part in ("train", "val")}
    if not kept["train"]:
        raise ValueError(f"holding out site {site!r} leaves no training case")
    return {**kept, "test": held_out}


def site_test_split(cases: Iterable[SiteCase], sites: Collection[str] | None = None) -> dict[str, list[str]]:
    """The split of a run that learns from no label: every case of ``sites`` (all sites if ``None``) is a test
    case; no case is trained or validated on with its label.

    Raises:
        ValueError: a requested site has no cases (the message lists the sites there are).
    """
    cases = list(cases)
    known = sorted({case.site for case in cases})
    missing = sorted(set(sites or ()) - set(known))
    if missing:
        raise ValueError(f"site {missing[0]!r} has no labeled cases here; sites are: {', '.join(known) or 'none'}")
    test = sorted(case.case_id for case in cases if sites is None or case.site in sites)
    return {"train": [], "val": [], "test": test}


def make_split(cases: Iterable[SiteCase], split_config: SplitConfig, seed: int) -> dict[str, list[str]]:
    """The split described by ``split_config`` (``holdout``, ``kfold`` or ``loso``)."""
    if split_config.mode == "holdout":
        return holdout_split(cases, split_config.val_fraction, split_config.test_fraction, seed)
    if split_config.mode == "kfold":
        return kfold_split(cases, split_config.folds, split_config.fold, split_config.val_fraction, seed)
    if split_config.mode == "loso":
        if split_config.test_site is None:
            raise ValueError("split mode 'loso' needs split.test_site")
        return loso_split(cases, split_config.test_site, split_config.val_fraction, seed)
    raise ValueError(f"unknown split mode {split_config.mode!r}; expected holdout, kfold or loso")


def group_by_site(cases: Iterable[SiteCase]) -> dict[str, list[str]]:
    """Case ids grouped by site: sites in sorted order, ids sorted within each site.

    Raises:
        ValueError: ``cases`` is empty or a case id occurs twice.
    """
    by_site: dict[str, list[str]] = {}
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise ValueError(f"case id {case.case_id!r} occurs more than once")
        seen.add(case.case_id)
        by_site.setdefault(case.site, []).append(case.case_id)
    if not by_site:
        raise ValueError("no cases to split")
    return {site: sorted(by_site[site]) for site in sorted(by_site)}


def subsets_by_site(cases: Iterable[SiteCase], case_ids: Iterable[str]) -> dict[str, list[str]]:
    """``case_ids`` grouped by the site of each case (the per-site subsets of a training set)."""
    site_of = {case.case_id: case.site for case in cases}
    unknown = sorted(set(case_ids) - set(site_of))
    if unknown:
        raise ValueError(f"case id {unknown[0]!r} is not among the known cases")
    by_site: dict[str, list[str]] = {}
    for case_id in sorted(set(case_ids)):
        by_site.setdefault(site_of[case_id], []).append(case_id)
    return {site: by_site[site] for site in sorted(by_site)}


def cross_validation_sets(cases: Iterable[SiteCase], case_ids: Iterable[str], folds: int, seed: int) -> list[list[str]]:
    """The training sets of a ``folds``-fold cross-validation of ``case_ids``: set i is every case but those of
    fold i, the folds dealt site by site (:func:`kfold_split`), so each site is spread evenly over them.

    Raises:
        ValueError: ``folds < 2``, more folds than cases, or an id not among ``cases``.
    """
    ids = set(case_ids)
    chosen = [case for case in cases if case.case_id in ids]
    if len(chosen) != len(ids):
        raise ValueError(f"case id {sorted(ids - {case.case_id for case in chosen})[0]!r} is not among the known cases")
    return [kfold_split(chosen, folds, fold, val_fraction=0.0, seed=seed)["train"] for fold in range(folds)]


TEACHER_SUBSETS = "'site', 'cases:K' (disjoint K-case subsets) or 'folds:K' (the K training sets of a K-fold " \
                  "cross-validation)"


def parse_by(by: str) -> tuple[str, int | None]:
    """``"site"`` → ``("site", None)``; ``"cases:K"`` → ``("cases", K)``; ``"folds:K"`` → ``("folds", K)``.

    Raises:
        ValueError: anything else, or K < 1 (K < 2 for folds).
    """
    kind, _, k = by.partition(":")
    if kind == "site" and not k:
        return "site", None
    if kind in ("cases", "folds") and k.isdigit() and int(k) >= (1 if kind == "cases" else 2):
        return kind, int(k)
    raise ValueError(f"must be {TEACHER_SUBSETS} (K >= 1, folds K >= 2), got {by!r}")


def teacher_training_sets(
    cases: Iterable[SiteCase], case_ids: Iterable[str], by: str, seed: int
) -> dict[str, list[str]]:
    """The training cases of each teacher drawn from ``case_ids`` as ``by`` says (:func:`parse_by`), by name: the
    site's name, ``k<i>`` for the i-th disjoint K-case subset, ``fold<i>`` for every case but those of fold i.

    Raises:
        ValueError: ``by`` is malformed, or the subsets cannot be drawn from ``case_ids``.
    """
    kind, k = parse_by(by)
    if kind == "site":
        return subsets_by_site(cases, case_ids)
    if kind == "cases":
        return {f"k{i}": ids for i, ids in enumerate(subsets_of_k(case_ids, k, seed=seed))}
    return {f"fold{i}": ids for i, ids in enumerate(cross_validation_sets(cases, case_ids, k, seed))}


def subsets_of_k(case_ids: Iterable[str], k: int, seed: int, count: int | None = None) -> list[list[str]]:
    """Disjoint random subsets of ``k`` cases each: as many as fit, or the first ``count`` of them.

    Raises:
        ValueError: ``k < 1``, or fewer than ``k`` (or ``count * k``) cases are available.
    """
    ids = sorted(set(case_ids))
    if k < 1:
        raise ValueError(f"subset size k must be >= 1, got {k}")
    wanted = len(ids) // k if count is None else count
    if wanted < 1 or wanted * k > len(ids):
        raise ValueError(f"cannot draw {wanted} disjoint subsets of k={k} from {len(ids)} cases")
    order = _shuffled(ids, seed, "subsets")
    return [sorted(order[i * k : (i + 1) * k]) for i in range(wanted)]


def restrict(
    case_ids: Iterable[str],
    cases: Iterable[SiteCase],
    sites: Collection[str] | None = None,
    max_cases: int | None = None,
    seed: int = 0,
) -> list[str]:
    """The ``case_ids`` from ``sites`` (all sites if ``None``), cut down to ``max_cases`` if given.

    The ``max_cases`` cases are chosen site-stratified (each site in proportion to its number of allowed
    cases, and at least one per site when ``max_cases`` is at least the number of sites) and
    deterministically from ``seed``.

    Raises:
        ValueError: a requested site has no cases (the message lists the sites there are), or more
            cases are requested than are available.
    """
    by_site = subsets_by_site(cases, case_ids)
    if sites is not None:
        missing = sorted(set(sites) - set(by_site))
        if missing:
            raise ValueError(f"site {missing[0]!r} has no cases here; sites are: {', '.join(by_site)}")
        by_site = {site: ids for site, ids in by_site.items() if site in sites}
    if max_cases is None:
        return sorted(case_id for ids in by_site.values() for case_id in ids)
    available = sum(len(ids) for ids in by_site.values())
    if not 1 <= max_cases <= available:
        raise ValueError(f"cannot choose {max_cases} cases: {available} are available from these sites")
    counts = _apportion(
        quotas={site: max_cases * len(ids) / available for site, ids in by_site.items()},
        capacity={site: len(ids) for site, ids in by_site.items()},
        at_least_one=set(by_site) if max_cases >= len(by_site) else (),
    )
    return sorted(
        case_id for site, ids in by_site.items() for case_id in _shuffled(ids, seed, site)[: counts[site]]
    )


def check_disjoint(split: Mapping[str, Sequence[str]]) -> None:
    """Raise ValueError naming the first case id that is listed twice or in more than one part."""
    part_of: dict[str, str] = {}
    for part, ids in split.items():
        for case_id in ids:
            if case_id in part_of:
                raise ValueError(f"case {case_id!r} is in both {part_of[case_id]!r} and {part!r}")
            part_of[case_id] = part


def leaked_cases(trained_on: Iterable[str], split: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The cases of ``trained_on`` (e.g. a teacher's training cases) that are in the ``"val"`` or ``"test"`` part
    of ``split``, sorted, by part; parts with no such case are left out (``{}``: nothing leaks)."""
    trained = set(trained_on)
    leaked = {part: sorted(trained.intersection(split[part])) for part in ("val", "test")}
    return {part: ids for part, ids in leaked.items() if ids}


def save_split(split: Mapping[str, Sequence[str]], path: str | Path, **meta: Any) -> None:
    """Write ``split`` as JSON, with ``meta`` (e.g. ``seed``, ``mode``) under the key ``"meta"``, atomically."""
    check_disjoint(split)
    payload: dict[str, Any] = {key: sorted(split[key]) for key in SPLIT_KEYS}
    payload["meta"] = meta
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split written by :func:`save_split` (the ``"meta"`` entry is not returned).

    Raises:
        ValueError: naming the file, if it is not valid JSON, lacks a part or lists a case twice.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read split JSON ({err})") from err
    missing = [key for key in SPLIT_KEYS if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise ValueError(f"{path}: split has no {missing[0]!r} list")
    split = {key: [str(case_id) for case_id in payload[key]] for key in SPLIT_KEYS}
    try:
        check_disjoint(split)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return split


def _split_off_validation(
    by_site: Mapping[str, list[str]], test: set[str], val_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Complete a split from its test set: ``val_fraction`` of each site's remaining cases (apportioned,
    at least one for sites with at least 3 remaining, at least one left for training) go to validation."""
    rest = {site: [i for i in ids if i not in test] for site, ids in by_site.items()}
    rest = {site: ids for site, ids in rest.items() if ids}
    val_counts = _apportion(
        quotas={site: val_fraction * len(ids) for site, ids in rest.items()},
        capacity={site: len(ids) - 1 for site, ids in rest.items()},
        at_least_one={site for site, ids in rest.items() if len(ids) >= 3} if val_fraction > 0 else (),
    )
    split: dict[str, list[str]] = {"train": [], "val": [], "test": sorted(test)}
    for site, ids in rest.items():
        order = _shuffled(ids, seed, f"val/{site}")
        split["val"] += order[: val_counts[site]]
        split["train"] += order[val_counts[site] :]
    return _sorted(split)


def _apportion(
    quotas: Mapping[str, float], capacity: Mapping[str, int], at_least_one: Collection[str]
) -> dict[str, int]:
    """Integer counts per site for real-valued ``quotas``, summing to ``round(sum(quotas))``.

    Starting from one count for each site in ``at_least_one``, counts are handed out one at a time to
    the site furthest below its quota; this yields the largest-remainder (Hamilton) apportionment. No
    site exceeds its ``capacity``; the guaranteed minimum may push the total above the target.
    """
    counts = {site: min(int(site in at_least_one), max(capacity[site], 0)) for site in quotas}
    target = math.floor(sum(quotas.values()) + 0.5)
    while sum(counts.values()) < target:
        open_sites = [site for site in counts if counts[site] < capacity[site]]
        if not open_sites:
            break
        neediest = max(open_sites, key=lambda site: quotas[site] - counts[site])
        counts[neediest] += 1
    return counts


def _shuffled(ids: Sequence[str], seed: int, salt: str) -> list[str]:
    """``ids`` in an order determined by ``(seed, salt)`` alone (string seeds hash the same in every run)."""
    order = list(ids)
    random.Random(f"{seed}/{salt}").shuffle(order)
    return order


def _sorted(split: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {key: sorted(split[key]) for key in SPLIT_KEYS}


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
