"""Label conversion between the three layouts and the overlapping regions."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.data.labels import (
    REGIONS,
    Layout,
    from_brats2021,
    label_values,
    labels_to_regions,
    regions_to_labels,
    to_brats2021,
)
from fedseg.errors import FedsegError


def test_label_values_per_layout() -> None:
    assert label_values(Layout.BRATS2021) == {0, 1, 2, 4}
    assert label_values(Layout.BRATS2023) == {0, 1, 2, 3}
    assert label_values(Layout.MSD) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("layout", "disk", "brats2021"),
    [
        (Layout.BRATS2021, [0, 1, 2, 4], [0, 1, 2, 4]),
        (Layout.BRATS2023, [0, 1, 2, 3], [0, 1, 2, 4]),  # ET 3 -> 4
        (Layout.MSD, [0, 1, 2, 3], [0, 2, 1, 4]),  # 1 ED -> 2, 2 NET -> 1, 3 ET -> 4
    ],
)
def test_conversion_both_ways(layout: Layout, disk: list[int], brats2021: list[int]) -> None:
    raw = np.array(disk, dtype=np.int16).reshape(1, 2, 2)
    converted = to_brats2021(raw, layout)
    assert converted.dtype == np.uint8
    assert converted.ravel().tolist() == brats2021
    assert from_brats2021(converted, layout).ravel().tolist() == disk


def test_conversion_round_trip_random(layout: Layout) -> None:
    rng = np.random.default_rng(3)
    label = rng.choice([0, 1, 2, 4], size=(6, 5, 4)).astype(np.uint8)
    assert np.array_equal(to_brats2021(from_brats2021(label, layout), layout), label)


def test_unknown_label_values_raise() -> None:
    with pytest.raises(FedsegError, match=r"\[3\].*brats2021"):
        to_brats2021(np.array([0, 1, 3]), Layout.BRATS2021)
    with pytest.raises(FedsegError, match=r"\[4\]"):
        to_brats2021(np.array([0, 4]), Layout.MSD)
    with pytest.raises(FedsegError, match=r"\[-1\]"):
        to_brats2021(np.array([0, -1, 2]), Layout.BRATS2023)


def test_labels_to_regions_nesting() -> None:
    label = np.array([0, 1, 2, 4], dtype=np.uint8).reshape(4, 1, 1)
    regions = labels_to_regions(label)
    assert regions.shape == (3, 4, 1, 1)
    assert REGIONS == ("ET", "TC", "WT")
    et, tc, wt = (regions[i].ravel().tolist() for i in range(3))
    assert et == [False, False, False, True]
    assert tc == [False, True, False, True]
    assert wt == [False, True, True, True]


def test_labels_regions_round_trip() -> None:
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 2, 4], size=(7, 6, 5)).astype(np.uint8)
    assert np.array_equal(regions_to_labels(labels_to_regions(label)), label)


def test_regions_to_labels_inner_region_wins() -> None:
    regions = np.zeros((3, 3, 1, 1), dtype=bool)
    regions[0, 0] = True  # ET only (inconsistent: not in TC/WT) -> still ET
    regions[1, 1] = True  # TC only -> NCR
    regions[2, 2] = True  # WT only -> ED
    assert regions_to_labels(regions).ravel().tolist() == [4, 1, 2]


def test_float_labels() -> None:
    # integral floats (labels stored as float32, as some tools do) convert
    out = to_brats2021(np.array([0.0, 1.0, 3.0], dtype=np.float32), Layout.BRATS2023)
    assert out.tolist() == [0, 1, 4]
    # interpolated labels are refused instead of truncated (1.5 would become NCR)
    with pytest.raises(FedsegError, match="non-integer"):
        to_brats2021(np.array([0.0, 1.5, 2.0]), Layout.BRATS2021)
    with pytest.raises(FedsegError, match="non-integer"):
        to_brats2021(np.array([0.0, np.nan]), Layout.BRATS2021)
