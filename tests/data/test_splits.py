from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pytest

from prokd.config import SplitConfig
from prokd.data.splits import (
    check_disjoint,
    cross_validation_sets,
    hold_out_site,
    holdout_split,
    kfold_split,
    leaked_cases,
    load_split,
    loso_split,
    make_split,
    parse_by,
    restrict,
    save_split,
    site_test_split,
    subsets_by_site,
    subsets_of_k,
    teacher_training_sets,
)

SITE_SIZES = {"A": 20, "B": 12, "C": 5, "D": 2}


@dataclass
class _Case:
    case_id: str
    site: str


def _cases(sizes: dict[str, int] = SITE_SIZES) -> list[_Case]:
    return [_Case(f"{site}{i:02d}", site) for site, n in sizes.items() for i in range(n)]


def _site_counts(ids: list[str]) -> dict[str, int]:
    return dict(Counter(case_id[0] for case_id in ids))


def _assert_partition(split: dict[str, list[str]], cases: list[_Case]) -> None:
    check_disjoint(split)
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(c.case_id for c in cases)
    assert all(split[key] == sorted(split[key]) for key in ("train", "val", "test"))


def test_holdout_partitions_all_cases_with_hand_computed_site_counts():
    cases = _cases()
    split = holdout_split(cases, val_fraction=0.15, test_fraction=0.2, seed=0)
    _assert_partition(split, cases)
    # test: round(0.2 * 39) = 8; quotas A 4, B 2.4, C 1, D 0.4 -> largest remainder gives B the 8th case.
    assert _site_counts(split["test"]) == {"A": 4, "B": 3, "C": 1}
    # val: round(0.15 * 39) = 6; quotas A 3, B 1.8, C 0.75 (guaranteed 1), D 0.3.
    assert _site_counts(split["val"]) == {"A": 3, "B": 2, "C": 1}
    assert _site_counts(split["train"]) == {"A": 13, "B": 7, "C": 3, "D": 2}


def test_holdout_every_site_with_three_cases_is_in_test_and_val():
    cases = _cases({"A": 30, "B": 3, "C": 3, "D": 4})
    split = holdout_split(cases, val_fraction=0.1, test_fraction=0.1, seed=3)
    _assert_partition(split, cases)
    for part in ("train", "val", "test"):
        assert set(_site_counts(split[part])) == {"A", "B", "C", "D"}
    assert _site_counts(split["test"])["B"] == _site_counts(split["val"])["B"] == 1


def test_holdout_is_deterministic_in_the_seed():
    cases = _cases()
    assert holdout_split(cases, seed=7) == holdout_split(list(reversed(cases)), seed=7)
    assert holdout_split(cases, seed=7)["test"] != holdout_split(cases, seed=8)["test"]


def test_holdout_with_zero_fractions_trains_on_everything():
    cases = _cases()
    split = holdout_split(cases, val_fraction=0.0, test_fraction=0.0)
    assert split["val"] == split["test"] == []
    assert len(split["train"]) == 39


def test_holdout_rejects_duplicate_ids_and_empty_input():
    with pytest.raises(ValueError, match="'A00' occurs more than once"):
        holdout_split([_Case("A00", "A"), _Case("A00", "B")])
    with pytest.raises(ValueError, match="no cases"):
        holdout_split([])


def test_kfold_test_folds_partition_the_cases_evenly_per_site():
    cases = _cases()
    test_folds = [kfold_split(cases, folds=5, fold=k, val_fraction=0.15, seed=1)["test"] for k in range(5)]
    all_test = [case_id for fold in test_folds for case_id in fold]
    assert sorted(all_test) == sorted(c.case_id for c in cases)
    assert sorted(len(fold) for fold in test_folds) == [7, 8, 8, 8, 8]
    for site, size in SITE_SIZES.items():
        per_fold = [_site_counts(fold).get(site, 0) for fold in test_folds]
        assert sum(per_fold) == size and max(per_fold) - min(per_fold) <= 1


def test_kfold_validation_is_drawn_from_the_remaining_cases():
    cases = _cases()
    split = kfold_split(cases, folds=5, fold=2, val_fraction=0.25, seed=1)
    _assert_partition(split, cases)
    remaining = len(cases) - len(split["test"])
    assert len(split["val"]) == round(0.25 * remaining)
    assert kfold_split(cases, 5, 2, 0.25, seed=1) == split
    with pytest.raises(ValueError, match="fold must be in"):
        kfold_split(cases, folds=5, fold=5)


def test_loso_tests_one_site_and_validates_on_the_others():
    cases = _cases()
    split = loso_split(cases, test_site="B", val_fraction=0.2, seed=0)
    _assert_partition(split, cases)
    assert split["test"] == [f"B{i:02d}" for i in range(12)]
    assert "B" not in _site_counts(split["val"]) and "B" not in _site_counts(split["train"])
    # val quotas of the other sites: A 4, C 1, D 0.4 -> 5 cases in total.
    assert _site_counts(split["val"]) == {"A": 4, "C": 1}


def test_loso_unknown_site_lists_the_sites():
    with pytest.raises(ValueError, match="unknown test site 'Z'; sites are: A, B, C, D"):
        loso_split(_cases(), test_site="Z")


def test_site_test_split_tests_every_case_of_the_sites_and_trains_on_none():
    cases = _cases()
    assert site_test_split(cases, ["B", "D"]) == {
        "train": [], "val": [], "test": [*(f"B{i:02d}" for i in range(12)), "D00", "D01"]}
    assert site_test_split(cases)["test"] == sorted(c.case_id for c in cases)
    with pytest.raises(ValueError, match="site 'Z' has no labeled cases here; sites are: A, B, C, D"):
        site_test_split(cases, ["A", "Z"])


def test_holding_out_a_site_of_a_saved_split_tests_all_its_cases_and_keeps_the_others_parts():
    cases = _cases()
    saved = holdout_split(cases, 0.15, 0.2, seed=1)
    held_out = hold_out_site(saved, cases, "C")
    assert held_out["test"] == [f"C{i:02d}" for i in range(5)]
    for part in ("train", "val"):
        assert held_out[part] == [case_id for case_id in saved[part] if not case_id.startswith("C")]
    check_disjoint(held_out)
    with pytest.raises(ValueError, match="unknown test site 'Z'; sites are: A, B, C, D"):
        hold_out_site(saved, cases, "Z")
    with pytest.raises(ValueError, match="holding out site 'A' leaves no training case"):
        hold_out_site({"train": ["A00"], "val": [], "test": ["B00"]}, cases, "A")


def test_make_split_dispatches_on_the_mode():
    cases = _cases()
    assert make_split(cases, SplitConfig(), seed=4) == holdout_split(cases, 0.15, 0.2, seed=4)
    kfold = SplitConfig(mode="kfold", folds=3, fold=1, val_fraction=0.1)
    assert make_split(cases, kfold, seed=4) == kfold_split(cases, 3, 1, 0.1, seed=4)
    loso = SplitConfig(mode="loso", test_site="C")
    assert make_split(cases, loso, seed=4) == loso_split(cases, "C", 0.15, seed=4)


def test_subsets_by_site_groups_the_given_ids():
    assert subsets_by_site(_cases(), ["C01", "A03", "C00"]) == {"A": ["A03"], "C": ["C00", "C01"]}
    with pytest.raises(ValueError, match="'X01' is not among"):
        subsets_by_site(_cases(), ["X01"])


def test_subsets_of_k_are_disjoint_and_deterministic():
    ids = [f"case{i:02d}" for i in range(23)]
    subsets = subsets_of_k(ids, k=5, seed=2)
    assert len(subsets) == 4 and all(len(subset) == 5 for subset in subsets)
    assert len({case_id for subset in subsets for case_id in subset}) == 20
    assert subsets_of_k(ids, k=5, seed=2, count=2) == subsets[:2]
    assert subsets_of_k(ids, k=5, seed=3) != subsets
    with pytest.raises(ValueError, match="cannot draw 5 disjoint subsets of k=5 from 23"):
        subsets_of_k(ids, k=5, seed=2, count=5)


def test_restrict_filters_sites_and_stratifies_the_case_limit():
    cases = _cases()
    ids = [c.case_id for c in cases]
    assert restrict(ids, cases, sites=["C", "D"]) == ["C00", "C01", "C02", "C03", "C04", "D00", "D01"]
    # 8 cases from A (20) and B (12): quotas 5 and 3.
    chosen = restrict(ids, cases, sites=["A", "B"], max_cases=8, seed=1)
    assert _site_counts(chosen) == {"A": 5, "B": 3}
    assert restrict(ids, cases, sites=["A", "B"], max_cases=8, seed=1) == chosen
    # D's quota is only 2/22 of 2 cases, but every requested site is represented.
    assert _site_counts(restrict(ids, cases, sites=["A", "D"], max_cases=2)) == {"A": 1, "D": 1}


def test_restrict_rejects_unknown_sites_and_too_many_cases():
    cases = _cases()
    ids = [c.case_id for c in cases]
    with pytest.raises(ValueError, match="site 'Q' has no cases here; sites are: A, B, C, D"):
        restrict(ids, cases, sites=["A", "Q"])
    with pytest.raises(ValueError, match="cannot choose 8 cases: 7 are available"):
        restrict(ids, cases, sites=["C", "D"], max_cases=8)


def test_check_disjoint_names_the_leaked_case():
    with pytest.raises(ValueError, match="case 'A02' is in both 'train' and 'test'"):
        check_disjoint({"train": ["A01", "A02"], "val": [], "test": ["A02"]})


def test_leaked_cases_are_the_trained_cases_in_val_or_test_by_part():
    split = {"train": ["A01", "A02"], "val": ["B01", "B02"], "test": ["C01", "C02", "C03"]}
    assert leaked_cases(["A01", "C03", "B02", "C01"], split) == {"val": ["B02"], "test": ["C01", "C03"]}
    assert leaked_cases(["A01", "A02", "Z99"], split) == {}


def test_save_and_load_round_trip(tmp_path):
    split = holdout_split(_cases(), seed=5)
    path = tmp_path / "split.json"
    save_split(split, path, seed=5, mode="holdout")
    assert load_split(path) == split
    assert json.loads(path.read_text())["meta"] == {"seed": 5, "mode": "holdout"}


def test_load_split_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(ValueError, match=r"bad\.json: case 'a' is in both 'train' and 'val'"):
        load_split(path)
    path.write_text(json.dumps({"train": [], "val": []}))
    with pytest.raises(ValueError, match=r"bad\.json: split has no 'test' list"):
        load_split(path)


def test_cross_validation_sets_leave_out_each_fold_once_spread_over_the_sites():
    cases = _cases()
    train = [case.case_id for case in cases if case.site != "D"]
    sets = cross_validation_sets(cases, train, folds=4, seed=2)
    left_out = [sorted(set(train) - set(ids)) for ids in sets]
    assert sorted(case_id for fold in left_out for case_id in fold) == sorted(train)  # each case left out once
    assert all(set(ids) <= set(train) for ids in sets)
    assert max(map(len, left_out)) - min(map(len, left_out)) <= 1
    assert all(max(counts.values()) - min(counts.values()) <= 1
               for counts in ({f: _site_counts(left_out[f]).get(site, 0) for f in range(4)} for site in "AB"))
    with pytest.raises(ValueError, match="cannot make 4 folds from 3 cases"):
        cross_validation_sets(cases, ["A00", "A01", "B00"], folds=4, seed=0)


def test_teacher_training_sets_by_site_cases_and_folds():
    cases = _cases()
    train = [case.case_id for case in cases]
    assert list(teacher_training_sets(cases, train, "site", seed=0)) == ["A", "B", "C", "D"]
    assert list(teacher_training_sets(cases, train, "cases:10", seed=0)) == ["k0", "k1", "k2"]
    folds = teacher_training_sets(cases, train, "folds:5", seed=0)
    assert list(folds) == [f"fold{i}" for i in range(5)] and all(len(ids) in (31, 32) for ids in folds.values())
    assert parse_by("folds:5") == ("folds", 5)
    for bad in ("folds:1", "cases:0", "cases:x", "site:2", "sites"):
        with pytest.raises(ValueError, match=r"must be 'site', 'cases:K' \(disjoint K-case subsets\) or 'folds:K'"):
            parse_by(bad)
