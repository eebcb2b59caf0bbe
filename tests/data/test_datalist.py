from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from prokd.config import ConfigError
from prokd.data.datalist import Case, DatasetError, load_case, load_cases
from prokd.data.io import Geometry, read_volume, write_volume

GRID = Geometry(spacing=(3.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0))
SHAPE = (3, 4, 5)


def volume(path: Path, values: np.ndarray | None = None, geometry: Geometry = GRID) -> Path:
    """Write ``values`` (default: an int16 intensity ramp) to ``path`` on ``geometry``."""
    if values is None:
        values = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    return write_volume(path, values, geometry)


def block_label(value: int = 1) -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:3, 1:3, 1:3] = value
    return label


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def datalist(tmp_path: Path) -> Path:
    """Two labeled cases (one with an absolute path), one validation case, two unlabeled entries, one test image."""
    for name in ("a", "b", "c", "u1_0000", "u2", "t1"):
        volume(tmp_path / "img" / f"{name}.nii.gz")
    for name in ("a", "b", "c"):
        volume(tmp_path / "lab" / f"{name}.nii.gz", block_label())
    return write_json(
        tmp_path / "list.json",
        {
            "training": [
                {"image": "img/a.nii.gz", "label": "lab/a.nii.gz", "site": "S1", "case": "alpha"},
                {"image": str(tmp_path / "img/b.nii.gz"), "label": "lab/b.nii.gz", "site": "S2"},
            ],
            "validation": [{"image": "img/c.nii.gz", "label": "lab/c.nii.gz", "site": "S1"}],
            "unlabeled": ["img/u1_0000.nii.gz", {"image": "img/u2.nii.gz", "site": "S3"}],
            "test": ["./img/t1.nii.gz"],
        },
    )


def test_datalist_cases_ids_sites_and_paths(datalist):
    index = load_cases(datalist)
    root = datalist.parent
    assert index.root == root
    assert index.labeled == [
        Case("alpha", root / "img/a.nii.gz", root / "lab/a.nii.gz", "S1"),
        Case("b", root / "img/b.nii.gz", root / "lab/b.nii.gz", "S2"),
        Case("c", root / "img/c.nii.gz", root / "lab/c.nii.gz", "S1"),
    ]
    assert index.unlabeled == [
        Case("u1", root / "img/u1_0000.nii.gz", None),
        Case("u2", root / "img/u2.nii.gz", None, "S3"),
    ]
    assert index.test == [Case("t1", root / "img/t1.nii.gz", None)]
    assert index.sites() == ["S1", "S2"]


def test_case_lookup_and_selection(datalist):
    index = load_cases(datalist)
    assert index.case("u2").site == "S3"
    assert [c.case_id for c in index.select(["c", "alpha", "t1"])] == ["c", "alpha", "t1"]
    with pytest.raises(KeyError, match="no case 'zeta'"):
        index.case("zeta")


def test_folder_with_dataset_json_is_a_datalist(tmp_path):
    volume(tmp_path / "imagesTr" / "p_00.nii.gz")
    volume(tmp_path / "labelsTr" / "p_00.nii.gz", block_label())
    volume(tmp_path / "imagesTs" / "p_01.nii.gz")
    write_json(
        tmp_path / "dataset.json",
        {
            "name": "Prostate",
            "training": [{"image": "./imagesTr/p_00.nii.gz", "label": "./labelsTr/p_00.nii.gz"}],
            "test": ["./imagesTs/p_01.nii.gz"],
        },
    )
    index = load_cases(tmp_path)
    assert [(c.case_id, c.image, c.label) for c in index.labeled] == [
        ("p_00", tmp_path / "imagesTr/p_00.nii.gz", tmp_path / "labelsTr/p_00.nii.gz")
    ]
    assert index.unlabeled == []
    assert [c.case_id for c in index.test] == ["p_01"]
    assert index.sites() == ["unknown"]


def test_nnunet_folder_is_scanned(tmp_path):
    write_json(tmp_path / "dataset.json", {"channel_names": {"0": "T2"}, "file_ending": ".nii.gz", "numTraining": 2})
    for case in ("pro_002", "pro_001"):
        volume(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        volume(tmp_path / "labelsTr" / f"{case}.nii.gz", block_label())
    volume(tmp_path / "imagesTs" / "pro_009_0000.nii.gz")
    (tmp_path / "imagesTr" / "._pro_001_0000.nii.gz").write_bytes(b"macOS resource fork")

    index = load_cases(tmp_path)

    assert [(c.case_id, c.image.name, c.label.name) for c in index.labeled] == [
        ("pro_001", "pro_001_0000.nii.gz", "pro_001.nii.gz"),
        ("pro_002", "pro_002_0000.nii.gz", "pro_002.nii.gz"),
    ]
    assert index.unlabeled == []
    assert [(c.case_id, c.label) for c in index.test] == [("pro_009", None)]


def test_msd_folder_without_list_pairs_same_names(tmp_path):
    volume(tmp_path / "imagesTr" / "prostate_00.mha")
    volume(tmp_path / "labelsTr" / "prostate_00.mha", block_label())
    index = load_cases(tmp_path)
    assert [(c.case_id, c.label) for c in index.labeled] == [("prostate_00", tmp_path / "labelsTr/prostate_00.mha")]
    assert index.unlabeled == []


def test_multichannel_nnunet_case_is_refused(tmp_path):
    for channel in ("0000", "0001"):
        volume(tmp_path / "imagesTr" / f"pro_001_{channel}.nii.gz")
    several = r"imagesTr: case 'pro_001' has several files \(pro_001_0000\.nii\.gz, pro_001_0001"
    with pytest.raises(DatasetError, match=several):
        load_cases(tmp_path)


def test_scanned_image_without_label(tmp_path):
    volume(tmp_path / "imagesTr" / "pro_001_0000.nii.gz")
    no_label = r"pro_001_0000\.nii\.gz: no label for case 'pro_001' \(expected .*labelsTr/pro_001\.nii\.gz\)"
    with pytest.raises(DatasetError, match=no_label):
        load_cases(tmp_path)
    index = load_cases(tmp_path, require_files=False)
    assert index.labeled[0].label == tmp_path / "labelsTr" / "pro_001.nii.gz"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"unlabeled": []}, r"needs a 'training' list"),
        ({"training": [{"image": "a.nii"}]}, r"training\[0\] has no 'label'"),
        ({"training": [], "unlabeled": [{"label": "a.nii"}]}, r"unlabeled\[0\] has no 'image'"),
        ({"training": ["a.nii"]}, r"training\[0\] must be an object with 'image' and 'label'"),
        ({"training": [{"image": "a.nii", "label": "b.nii", "site": 3}]}, r"training\[0\] 'site' must be a string"),
        ({"training": [{"image": "a.png", "label": "b.nii"}]}, r"training\[0\]: .*a\.png: unsupported file type"),
        ({"training": [{"image": "gone.nii", "label": "a.nii"}]}, r"training\[0\]: file not found: .*gone\.nii"),
        ({"training": [], "test": {"image": "a.nii"}}, r"'test' must be a list, got dict"),
        (
            {"training": [{"image": "a.nii", "label": "a.nii"}], "unlabeled": [{"image": "b.nii", "case": "a"}]},
            r"duplicate case id 'a' \(training\[0\] and unlabeled\[0\]\)",
        ),
        (
            {"training": [], "unlabeled": ["a.nii"], "test": [{"image": "b.nii", "case": "a"}]},
            r"duplicate case id 'a' \(unlabeled\[0\] and test\[0\]\)",
        ),
    ],
)
def test_datalist_errors_name_the_file_and_entry(tmp_path, data, message):
    volume(tmp_path / "a.nii")
    volume(tmp_path / "b.nii")
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(DatasetError, match=message) as caught:
        load_cases(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_missing_files_may_be_left_to_load_case(tmp_path):
    volume(tmp_path / "a.nii")
    path = write_json(tmp_path / "list.json", {"training": [{"image": "a.nii", "label": "gone.nii"}]})
    case = load_cases(path, require_files=False).labeled[0]
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'gone.nii'}: file not found$"):
        load_case(case)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nowhere", r"nowhere: no such file or folder"),
        (".", r"found neither a dataset.json with a 'training' list nor an imagesTr/"),
    ],
)
def test_unusable_sources(tmp_path, source, message):
    with pytest.raises(DatasetError, match=message):
        load_cases(tmp_path / source)


def test_unreadable_json(tmp_path):
    (tmp_path / "list.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"list\.json: cannot read datalist JSON"):
        load_cases(tmp_path / "list.json")


def test_load_case_types_and_values(datalist):
    loaded = load_case(load_cases(datalist).case("alpha"))
    assert loaded.image.dtype == np.float32 and loaded.image.shape == SHAPE
    assert loaded.image[2, 3, 4] == 59.0
    assert loaded.label.dtype == np.uint8 and int(loaded.label.sum()) == 8
    assert loaded.geometry.same_grid(GRID, tol=1e-6)
    assert load_case(load_cases(datalist).case("t1")).label is None


def case_with(tmp_path: Path, image: np.ndarray, label: np.ndarray, label_geometry: Geometry = GRID) -> Case:
    return Case("x", volume(tmp_path / "x.nii.gz", image), volume(tmp_path / "x_seg.nii.gz", label, label_geometry))


def test_non_finite_image_is_refused(tmp_path):
    image = np.zeros(SHAPE, np.float32)
    image[0, 0, :2] = [np.nan, np.inf]
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'x.nii.gz'}: 2 voxels are NaN or infinite$"):
        load_case(case_with(tmp_path, image, block_label()))


def test_label_shape_and_grid_must_match_the_image(tmp_path):
    image = np.ones(SHAPE, np.int16)
    with pytest.raises(DatasetError, match=r"x_seg\.nii\.gz: label shape \(3, 4, 4\) differs from the image's \(3, 4, 5"):
        load_case(case_with(tmp_path, image, block_label()[..., :4]))
    moved = Geometry(spacing=GRID.spacing, origin=(1.0, 2.0, 4.0))
    moved_message = r"x_seg\.nii\.gz: label grid differs from the image's \(origin \(1, 2, 4\) vs \(1, 2, 3\)\)"
    with pytest.raises(DatasetError, match=moved_message):
        load_case(case_with(tmp_path / "moved", image, block_label(), moved))


def test_label_values_outside_0_1_need_a_label_map(tmp_path):
    label = block_label(2)
    label[0, 0, 0] = 1
    case = case_with(tmp_path, np.ones(SHAPE, np.int16), label)
    with pytest.raises(DatasetError, match=r"x_seg\.nii\.gz: label values 2 are not in \{0, 1\} .*; found 0, 1, 2$"):
        load_case(case)
    merged = load_case(case, {1: 1, 2: 1}).label
    np.testing.assert_array_equal(merged, (label > 0).astype(np.uint8))
    only_two = load_case(case, {1: 0, 2: 1}).label
    assert int(only_two.sum()) == 8 and only_two[0, 0, 0] == 0
    with pytest.raises(DatasetError, match=r"label values 1 are not in label_map; found 0, 1, 2$"):
        load_case(case, {2: 1})
    with pytest.raises(ConfigError, match=r"'label_map' must map label values to 0 or 1, got 2: 3"):
        load_case(case, {2: 3})


def test_float_labels_with_integral_values_are_accepted(tmp_path):
    case = case_with(tmp_path, np.ones(SHAPE, np.int16), block_label().astype(np.float32))
    np.testing.assert_array_equal(load_case(case).label, block_label())


def test_a_case_stored_in_another_axis_order_loads_as_the_same_arrays(phantom_data, reoriented, tmp_path):
    original = load_cases(phantom_data).labeled[0]
    reference = load_case(original)
    for suffix in (".nii.gz", ".mha"):
        image = reoriented(original.image, tmp_path / f"image{suffix}")
        label = reoriented(original.label, tmp_path / f"label{suffix}")
        assert read_volume(image)[0].shape != reference.image.shape  # stored with other slices
        loaded = load_case(Case(original.case_id, image, label, original.site))
        np.testing.assert_array_equal(loaded.image, reference.image)
        np.testing.assert_array_equal(loaded.label, reference.label)
        assert loaded.geometry.same_grid(reference.geometry, tol=1e-4)
    mixed = load_case(Case(original.case_id, original.image, tmp_path / "label.mha", original.site))
    np.testing.assert_array_equal(mixed.label, reference.label)  # a label in another axis order, same voxels


def test_the_channel_of_a_multichannel_image_is_chosen(tmp_path):
    t2 = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    image = tmp_path / "prostate_00.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([t2, -t2], axis=-1).transpose(2, 1, 0, 3), GRID.ras_affine()), image)
    case = Case("prostate_00", image, volume(tmp_path / "label.nii.gz", block_label()))
    np.testing.assert_array_equal(load_case(case, channel=0).image, t2)
    np.testing.assert_array_equal(load_case(case, channel=1).image, -t2)
    two = r"prostate_00\.nii\.gz: has 2 channels \(shape \(channels, slices, rows, cols\) = \(2, 3, 4, 5\)\); choose"
    with pytest.raises(DatasetError, match=two):
        load_case(case)
