"""BraTS metrics on hand-made masks; every expected value is worked out in a comment."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.model.metrics import (
    HD95_ONE_EMPTY,
    case_metrics,
    dice,
    hd95,
    jaccard,
    region_metrics,
    sensitivity,
    specificity,
)


def _cube(shape: tuple[int, int, int], lo: tuple[int, int, int], side: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : lo[0] + side, lo[1] : lo[1] + side, lo[2] : lo[2] + side] = True
    return m


def test_dice_and_jaccard_of_two_overlapping_cubes() -> None:
    # Two 4^3 cubes (64 voxels each), the second shifted by 2 along x: overlap 2*4*4 = 32.
    # Dice = 2*32 / (64+64) = 0.5; Jaccard = 32 / (64+64-32) = 1/3.
    a = _cube((10, 10, 10), (1, 1, 1), 4)
    b = _cube((10, 10, 10), (3, 1, 1), 4)
    assert dice(a, b) == pytest.approx(0.5)
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert dice(a, a) == 1.0 and jaccard(a, a) == 1.0


def test_hd95_honours_anisotropic_spacing() -> None:
    # Two full planes z=2 and z=4 (one voxel thick): every surface voxel is 2 voxels from
    # the other plane along z, so all distances are 2 * 2.5 mm = 5 mm -> HD95 = 5.
    a = np.zeros((6, 6, 8), bool)
    b = np.zeros((6, 6, 8), bool)
    a[:, :, 2] = True
    b[:, :, 4] = True
    assert hd95(a, b, (1.0, 1.0, 2.5)) == pytest.approx(5.0)
    # The same shift along x with 3 mm voxels there: 2 * 3 = 6 mm.
    assert hd95(a.transpose(2, 1, 0), b.transpose(2, 1, 0), (3.0, 1.0, 1.0)) == pytest.approx(6)
    # Single voxels at (0,0,0) and (1,0,2), spacing (2, 1, 1.5): sqrt(2^2 + 3^2) = sqrt(13).
    p = np.zeros((4, 4, 4), bool)
    r = np.zeros((4, 4, 4), bool)
    p[0, 0, 0], r[1, 0, 2] = True, True
    assert hd95(p, r, (2.0, 1.0, 1.5)) == pytest.approx(np.sqrt(13))


def test_hd95_ignores_a_lone_outlier_unlike_hausdorff() -> None:
    # Reference: a 4^3 cube, whose surface is 64 - 2^3 = 56 voxels. Prediction: the same cube
    # plus one voxel 10 voxels away. Pooled distances: 56 + 1 from the prediction, 56 from
    # the reference = 113, all 0 except the outlier's. The 95th percentile sits at rank
    # 0.95 * 112 = 106.4 of the sorted list, between two zeros -> HD95 = 0 (Hausdorff 10).
    ref = _cube((20, 8, 8), (1, 1, 1), 4)
    pred = ref.copy()
    pred[15, 2, 2] = True
    assert hd95(pred, ref, (1.0, 1.0, 1.0)) == 0.0


def test_empty_mask_rules() -> None:
    empty = np.zeros((8, 8, 8), bool)
    some = _cube((8, 8, 8), (2, 2, 2), 2)  # 8 voxels of 512
    sp = (1.0, 1.0, 1.0)
    # Both empty: perfect agreement.
    assert region_metrics(empty, empty, sp) == {
        "dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "sensitivity": 1.0, "specificity": 1.0
    }  # fmt: skip
    # Prediction empty, reference not: Dice 0, HD95 = 373.13, nothing found, no false positive.
    m = region_metrics(empty, some, sp)
    assert (m["dice"], m["jaccard"], m["hd95"]) == (0.0, 0.0, HD95_ONE_EMPTY)
    assert (m["sensitivity"], m["specificity"]) == (0.0, 1.0)
    # Reference empty, prediction not: Dice 0, HD95 = 373.13, sensitivity 0 by convention,
    # specificity (512 - 8) / 512.
    m = region_metrics(some, empty, sp)
    assert (m["dice"], m["jaccard"], m["hd95"], m["sensitivity"]) == (0, 0, HD95_ONE_EMPTY, 0)
    assert m["specificity"] == pytest.approx(504 / 512)
    assert pytest.approx(np.sqrt(240**2 + 240**2 + 155**2), abs=0.01) == HD95_ONE_EMPTY


def test_sensitivity_and_specificity() -> None:
    # 10x10x10 = 1000 voxels; reference = the plane x=0 (100 voxels, 900 negatives).
    # Prediction: half the reference (50 TP) and 20 voxels elsewhere (20 FP).
    # Sensitivity = 50/100 = 0.5; specificity = (900 - 20) / 900 = 0.97777...
    ref = np.zeros((10, 10, 10), bool)
    ref[0] = True
    pred = np.zeros_like(ref)
    pred[0, :5] = True
    pred[5, :2] = True
    assert sensitivity(pred, ref) == pytest.approx(0.5)
    assert specificity(pred, ref) == pytest.approx(880 / 900)


def test_case_metrics_uses_the_nested_regions() -> None:
    # Reference: ET 4 voxels inside NCR inside ED. Prediction calls every tumor voxel edema:
    # WT perfect (Dice 1); TC and ET absent from the prediction (Dice 0, HD95 373.13).
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[1:7, 1:7, 1:7] = 2
    ref[2:6, 2:6, 2:6] = 1
    ref[3:5, 3:5, 3] = 4
    pred = np.where(ref > 0, 2, 0).astype(np.uint8)
    m = case_metrics(pred, ref, (1.0, 1.0, 2.0))
    assert m["WT"]["dice"] == 1.0 and m["WT"]["hd95"] == 0.0
    assert m["TC"]["dice"] == 0.0 and m["ET"]["hd95"] == HD95_ONE_EMPTY
