from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from prokd.data.check import check_cases, render_report
from prokd.data.datalist import CaseIndex, load_cases
from prokd.data.io import Geometry, write_volume

SHAPE = (2, 4, 5)
KNOWN = Geometry(spacing=(3.0, 0.5, 0.5))


def label_with(ones: int, value: int = 1) -> np.ndarray:
    """A ``SHAPE`` label whose first ``ones`` voxels (in C order) are ``value``."""
    label = np.zeros(np.prod(SHAPE), dtype=np.uint8)
    label[:ones] = value
    return label.reshape(SHAPE)


def image(fill: float = 1.0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    return np.full(shape, fill, dtype=np.float32)


@pytest.fixture
def mixed_datalist(tmp_path: Path) -> Path:
    """Two good cases (sites A, B), four bad ones (site A) and one unlabeled case, as numpy files."""
    volumes = {
        "good1": (image(), label_with(10)),  # foreground 10/40
        "good2": (image(shape=(3, 6, 6)), np.ones((3, 6, 6), np.uint8)),  # foreground 1
        "shape": (image(), label_with(4)[:, :, :4]),
        "value2": (image(), label_with(4, value=2)),
        "nan": (image(np.nan), label_with(4)),
        "missing": (image(), None),
    }
    training = []
    for case, (values, label) in volumes.items():
        np.save(tmp_path / f"{case}.npy", values)
        if label is not None:
            np.save(tmp_path / f"{case}_seg.npy", label)
        site = "B" if case == "good2" else "A"
        training.append({"image": f"{case}.npy", "label": f"{case}_seg.npy", "site": site})
    np.save(tmp_path / "extra.npy", image(shape=(5, 4, 5)))
    (tmp_path / "list.json").write_text(json.dumps({"training": training, "unlabeled": ["extra.npy"]}))
    return tmp_path / "list.json"


def test_every_bad_case_gives_exactly_one_error_naming_its_file(mixed_datalist):
    folder = mixed_datalist.parent
    report = check_cases(load_cases(mixed_datalist, require_files=False))

    assert not report.ok
    assert len(report.errors) == 4
    culprits = [folder / "shape_seg.npy", folder / "value2_seg.npy", folder / "nan.npy", folder / "missing_seg.npy"]
    for error, culprit in zip(report.errors, culprits):
        assert error.startswith(f"{culprit}: ")
    assert [stats.case_id for stats in report.cases] == ["good1", "good2", "extra"]


def test_site_rows_aggregate_the_loaded_cases(mixed_datalist):
    rows = check_cases(load_cases(mixed_datalist, require_files=False)).site_rows()
    unknown = {"spacing": "unknown"}
    assert rows == [
        {"site": "A", "cases": 1, "labeled": 1, "slices": 2, "in_plane": "4x5", **unknown, "foreground": 0.25},
        {"site": "B", "cases": 1, "labeled": 1, "slices": 3, "in_plane": "6x6", **unknown, "foreground": 1.0},
        {"site": "unknown", "cases": 1, "labeled": 0, "slices": 5, "in_plane": "4x5", **unknown, "foreground": None},
    ]


def test_label_map_accepts_other_label_values(mixed_datalist):
    index = load_cases(mixed_datalist, require_files=False)
    report = check_cases(index, label_map={2: 1})  # value 1 is now unmapped in good1 and good2
    assert [stats.case_id for stats in report.cases] == ["value2", "extra"]
    assert len(report.errors) == 5
    report = check_cases(index, label_map={1: 1, 2: 1})
    assert [stats.case_id for stats in report.cases] == ["good1", "good2", "value2", "extra"]
    assert report.cases[2].foreground_fraction == 4 / 40
    assert len(report.errors) == 3


def test_nnunet_folder_with_known_spacing(tmp_path):
    def case(name: str, spacing: tuple[float, float, float], label: np.ndarray) -> None:
        geometry = Geometry(spacing=spacing)
        write_volume(tmp_path / "imagesTr" / f"{name}_0000.nii.gz", image(), geometry)
        write_volume(tmp_path / "labelsTr" / f"{name}.nii.gz", label, geometry)

    case("p1", (3.0, 0.5, 0.5), label_with(8))
    case("p2", (4.0, 0.5, 0.625), label_with(16))
    case("p3", (3.0, 0.5, 0.5), label_with(4, value=3))

    report = check_cases(load_cases(tmp_path))

    problem = "label values 3 are not in {0, 1} (pass a label_map to map them); found 0, 3"
    assert report.errors == [f"{tmp_path / 'labelsTr' / 'p3.nii.gz'}: {problem}"]
    [row] = report.site_rows()
    assert row["spacing"] == "(3-4, 0.5, 0.5-0.625) mm"
    assert row["foreground"] == pytest.approx((8 / 40 + 16 / 40) / 2)
    assert row["slices"] == 4


def test_mixed_known_and_unknown_spacing_is_noted(tmp_path):
    write_volume(tmp_path / "a.nii", image(), KNOWN)
    write_volume(tmp_path / "b.npy", image(), KNOWN)
    index = load_cases_from(tmp_path, ["a.nii", "b.npy"])
    assert check_cases(index).site_rows()[0]["spacing"] == "(3, 0.5, 0.5) mm (1 unknown)"


def load_cases_from(folder: Path, unlabeled: list[str]) -> CaseIndex:
    (folder / "list.json").write_text(json.dumps({"training": [], "unlabeled": unlabeled}))
    return load_cases(folder / "list.json")


def test_render_report_prints_table_and_errors_verbatim(tmp_path):
    np.save(tmp_path / "ok.npy", image())
    np.save(tmp_path / "bad[1].npy", image(np.inf))
    console = Console(record=True, width=300)

    render_report(check_cases(load_cases_from(tmp_path, ["ok.npy", "bad[1].npy"])), console)

    text = console.export_text()
    assert "unknown" in text and "4x5" in text
    assert "1 case(s) with problems:" in text
    assert f"{tmp_path / 'bad[1].npy'}: 40 voxels are NaN or infinite" in text


def test_render_report_without_problems(tmp_path):
    np.save(tmp_path / "ok.npy", image())
    console = Console(record=True, width=200)
    render_report(check_cases(load_cases_from(tmp_path, ["ok.npy"])), console)
    assert "All 1 cases loaded without problems." in console.export_text()


def test_render_report_reads_at_80_columns_and_keeps_each_error_on_one_line(tmp_path, assert_readable):
    sites = ["Radboud-University-Nijmegen-Medical-Centre", "Beth-Israel-Deaconess", "University-College-London"]
    training = []
    for i, site in enumerate(sites):
        np.save(tmp_path / f"case{i}.npy", image(shape=(2 + i, 4 * (i + 1), 5 * (i + 1))))
        np.save(tmp_path / f"case{i}_seg.npy", np.zeros((2 + i, 4 * (i + 1), 5 * (i + 1)), np.uint8))
        training.append({"image": f"case{i}.npy", "label": f"case{i}_seg.npy", "site": site})
    bad = "a-volume-whose-file-name-alone-is-longer-than-the-eighty-columns-of-a-terminal.npy"
    np.save(tmp_path / bad, image(np.nan))
    (tmp_path / "list.json").write_text(json.dumps({"training": training, "unlabeled": [bad]}))
    console = Console(record=True, width=80)

    render_report(check_cases(load_cases(tmp_path / "list.json")), console)

    lines = console.export_text().splitlines()
    table, errors = lines[:-2], lines[-2:]
    assert_readable("\n".join(table), sites)
    assert errors == ["1 case(s) with problems:", f"{tmp_path / bad}: 40 voxels are NaN or infinite"]


@pytest.mark.promise12
def test_promise12_index(promise12):
    index = load_cases(promise12)
    assert (len(index.labeled), len(index.unlabeled)) == (36, 29)
    assert index.sites() == ["BIDMC", "HK", "RUNMC", "UCL"]
    assert sum(case.site == "BIDMC" for case in index.labeled) == 6
    subset = CaseIndex(index.root, [index.case("case00")], [index.unlabeled[0]])
    report = check_cases(subset)
    assert report.ok
    assert report.cases[0].spacing is None
    assert report.cases[0].slices == 47 and (report.cases[0].rows, report.cases[0].cols) == (256, 256)
    assert 0 < report.cases[0].foreground_fraction < 0.1
