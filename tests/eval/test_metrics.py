from __future__ import annotations

import math

import numpy as np
import pytest

import prokd.eval.metrics
from prokd.eval.metrics import EMPTY_MASK_POLICY, case_metrics, dice_score, summarize


def box(shape, z, y, x) -> np.ndarray:
    """Boolean volume of ``shape`` that is True on the slices ``z``, ``y``, ``x`` (pairs of bounds)."""
    mask = np.zeros(shape, dtype=bool)
    mask[slice(*z), slice(*y), slice(*x)] = True
    return mask


def test_overlap_of_two_cubes():
    pred = box((6, 6, 6), (0, 4), (0, 4), (0, 4))
    truth = box((6, 6, 6), (2, 6), (0, 4), (0, 4)).astype(np.uint8)
    # 64 voxels each, 32 shared: Dice 64 / 128, IoU 32 / 96; voxel volume 2 * 0.5 * 0.5 mm^3
    result = case_metrics(pred, truth, spacing=(2.0, 0.5, 0.5))
    assert result["dice"] == 0.5
    assert result["iou"] == pytest.approx(1 / 3, abs=1e-12)
    assert result["volume_pred"] == pytest.approx(64 * 0.5 / 1000, abs=1e-12)
    assert result["volume_true"] == pytest.approx(64 * 0.5 / 1000, abs=1e-12)
    assert (result["volume_unit"], result["distance_unit"]) == ("ml", "mm")


def test_one_voxel_shift_of_a_box_in_pixels():
    # 3x3x3 boxes shifted by one voxel along x: each surface has 26 voxels, of which the 9 on the
    # outer face and the one that is the other box's centre lie 1 voxel from the other surface.
    pred = box((8, 8, 8), (2, 5), (2, 5), (2, 5))
    truth = box((8, 8, 8), (2, 5), (2, 5), (3, 6))
    result = case_metrics(pred, truth, spacing=None)
    assert result["hd95"] == pytest.approx(1.0, abs=1e-6)
    assert result["assd"] == pytest.approx(2 * 10 / 52, abs=1e-6)
    assert result["dice"] == pytest.approx(2 * 18 / 54, abs=1e-12)
    assert (result["volume_pred"], result["volume_true"]) == (27.0, 27.0)
    assert (result["volume_unit"], result["distance_unit"]) == ("voxels", "px")


@pytest.mark.parametrize(
    ("truth_bounds", "face_distance"),
    [(((2, 5), (2, 5), (3, 6)), 0.8), (((3, 6), (2, 5), (2, 5)), 3.0)],
    ids=["shift-x", "shift-z"],
)
def test_one_voxel_shift_of_a_box_in_mm(truth_bounds, face_distance):
    # spacing (z, y, x) = (3, 0.5, 0.8): the 9 face voxels per surface lie one step along the shift
    # axis away; each box's centre is nearer to the other surface's y-neighbour, at 0.5 mm
    pred = box((8, 8, 8), (2, 5), (2, 5), (2, 5))
    truth = box((8, 8, 8), *truth_bounds)
    result = case_metrics(pred, truth, spacing=(3.0, 0.5, 0.8))
    assert result["hd95"] == pytest.approx(face_distance, abs=1e-5)
    assert result["assd"] == pytest.approx(2 * (9 * face_distance + 0.5) / 52, abs=1e-5)


def test_both_empty_is_perfect():
    empty = np.zeros((4, 5, 6), dtype=np.uint8)
    result = case_metrics(empty, empty, spacing=(3.0, 0.5, 0.5))
    expected = {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "volume_pred": 0.0, "volume_true": 0.0}
    assert {key: result[key] for key in expected} == expected


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_exactly_one_empty_scores_the_volume_diagonal(empty_side):
    mask = box((4, 6, 10), (1, 3), (1, 3), (1, 3))
    empty = np.zeros_like(mask)
    pred, truth = (empty, mask) if empty_side == "pred" else (mask, empty)
    in_mm = case_metrics(pred, truth, spacing=(3.0, 0.5, 0.8))
    diagonal_mm = math.sqrt((3 * 3.0) ** 2 + (5 * 0.5) ** 2 + (9 * 0.8) ** 2)
    assert (in_mm["dice"], in_mm["iou"]) == (0.0, 0.0)
    assert in_mm["hd95"] == in_mm["assd"] == pytest.approx(diagonal_mm, abs=1e-12)
    in_px = case_metrics(pred, truth, spacing=None)
    assert in_px["hd95"] == in_px["assd"] == pytest.approx(math.sqrt(3**2 + 5**2 + 9**2), abs=1e-12)
    assert not any(math.isnan(v) for v in (*in_mm.values(), *in_px.values()) if isinstance(v, float))


def test_dice_score_agrees_with_case_metrics():
    pred = box((6, 6, 6), (0, 4), (0, 4), (0, 4))
    truth = box((6, 6, 6), (2, 6), (0, 4), (0, 4))
    assert dice_score(pred, truth) == 0.5
    assert dice_score(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))) == 1.0
    assert dice_score(pred, np.zeros_like(pred)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        dice_score(pred, truth[:3])


def test_nonzero_labels_are_foreground():
    pred = box((4, 4, 4), (0, 2), (0, 2), (0, 2)).astype(np.uint8) * 255
    truth = box((4, 4, 4), (0, 2), (0, 2), (0, 2))
    assert case_metrics(pred, truth, None)["dice"] == 1.0


def test_policy_text_is_exposed():
    assert "both empty" in EMPTY_MASK_POLICY and "volume diagonal" in EMPTY_MASK_POLICY
    assert EMPTY_MASK_POLICY in prokd.eval.metrics.__doc__


def test_case_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        case_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)), None)
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        case_metrics(np.zeros((3, 3)), np.zeros((3, 3)), None)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), (1.0, 0.0, 1.0))


ROWS = [
    {"case": "a1", "site": "A", "dice": 0.8, "hd95": 2.0},
    {"case": "a2", "site": "A", "dice": 0.6, "hd95": 4.0},
    {"case": "b1", "site": "B", "dice": 0.9, "hd95": 3.0},
]


def test_summarize_per_site_and_overall():
    summary = summarize(ROWS, metrics=("dice", "hd95"))
    assert list(summary) == ["A", "B", "overall"]
    assert summary["A"]["dice"] == {"mean": pytest.approx(0.7), "sd": pytest.approx(math.sqrt(0.02)), "n": 2}
    assert summary["B"]["dice"] == {"mean": pytest.approx(0.9), "sd": 0.0, "n": 1}
    # overall dice: deviations 1/30, -1/6, 2/15 -> variance (1/900 + 1/36 + 4/225) / 2 = 7/300
    assert summary["overall"]["dice"] == {
        "mean": pytest.approx(2.3 / 3), "sd": pytest.approx(math.sqrt(7 / 300)), "n": 3
    }
    assert summary["overall"]["hd95"] == {"mean": pytest.approx(3.0), "sd": pytest.approx(1.0), "n": 3}


def test_summarize_without_groups_and_with_default_metrics():
    rows = [case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), None) for _ in range(2)]
    summary = summarize(rows, by=None)
    assert list(summary) == ["overall"]
    assert set(summary["overall"]) == {"dice", "iou", "hd95", "assd"}
    assert summary["overall"]["dice"] == {"mean": 1.0, "sd": 0.0, "n": 2}


def test_summarize_rejects_bad_rows():
    with pytest.raises(ValueError, match="no rows"):
        summarize([])
    with pytest.raises(ValueError, match="row 0 has no 'site'"):
        summarize([{"dice": 1.0}], metrics=("dice",))
    with pytest.raises(ValueError, match="row 0 has no 'iou', 'assd'"):
        summarize(ROWS)
    with pytest.raises(ValueError, match="clashes"):
        summarize([{"site": "overall", "dice": 1.0}], metrics=("dice",))
