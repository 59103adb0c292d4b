"""Label conventions of the three supported layouts and the overlapping tumor regions.

fedseg works internally in BraTS 2017-2021 labels: 0 background, 1 necrotic core (NCR),
2 edema (ED), 4 enhancing tumor (ET). Regions are overlapping binary masks, one sigmoid
channel each, in the fixed order ``REGIONS = ("ET", "TC", "WT")``.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from fedseg.errors import FedsegError

REGIONS: tuple[str, ...] = ("ET", "TC", "WT")

NCR, ED, ET = 1, 2, 4
#: BraTS 2021 labels that make up each region.
REGION_LABELS: dict[str, tuple[int, ...]] = {"ET": (ET,), "TC": (NCR, ET), "WT": (NCR, ED, ET)}


class Layout(StrEnum):
    """How a data set stores its cases and which label values it uses."""

    BRATS2021 = "brats2021"  # <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz, labels 1 NCR 2 ED 4 ET
    BRATS2023 = "brats2023"  # <case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz, labels 1 NETC 2 SNFH 3 ET
    MSD = "msd"  # Task01: imagesTr/<case>.nii.gz 4D (FLAIR,T1w,T1gd,T2w), labels 1 ED 2 NET 3 ET


#: Map from a layout's label values to BraTS 2021 values (background is always 0).
TO_BRATS2021: dict[Layout, dict[int, int]] = {
    Layout.BRATS2021: {1: 1, 2: 2, 4: 4},
    Layout.BRATS2023: {1: 1, 2: 2, 3: 4},
    Layout.MSD: {1: 2, 2: 1, 3: 4},
}


def label_values(layout: Layout) -> frozenset[int]:
    """All label values valid in ``layout``, background included."""
    return frozenset({0, *TO_BRATS2021[layout]})


def _remap(label: np.ndarray, mapping: dict[int, int], source: str) -> np.ndarray:
    label = np.asarray(label)
    if np.issubdtype(label.dtype, np.floating) and not np.array_equal(label, np.round(label)):
        # a cast would silently turn 1.5 into 1; a float label map is a resampled one
        raise FedsegError(
            f"label map has non-integer values, not valid {source} labels; "
            "resample labels with nearest-neighbour interpolation"
        )
    values = np.unique(label)
    unknown = sorted(int(v) for v in values if int(v) != 0 and int(v) not in mapping)
    if unknown:
        raise FedsegError(
            f"label values {unknown} are not valid {source} labels "
            f"(expected {sorted(mapping)}); check the data set's layout"
        )
    lut = np.zeros(max(int(values.max()), max(mapping)) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[label.astype(np.int64)]


def to_brats2021(label: np.ndarray, layout: Layout) -> np.ndarray:
    """Convert a label map (any integer array) from ``layout``'s values to BraTS 2021, uint8."""
    return _remap(label, TO_BRATS2021[layout], layout.value)


def from_brats2021(label: np.ndarray, layout: Layout) -> np.ndarray:
    """Convert a BraTS 2021 label map to ``layout``'s values, uint8."""
    inverse = {dst: src for src, dst in TO_BRATS2021[layout].items()}
    return _remap(label, inverse, Layout.BRATS2021.value)


def labels_to_regions(label: np.ndarray) -> np.ndarray:
    """BraTS 2021 label map (X, Y, Z) -> boolean regions (3, X, Y, Z) in ``REGIONS`` order."""
    return np.stack([np.isin(label, REGION_LABELS[r]) for r in REGIONS])


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Boolean regions (3, X, Y, Z) in ``REGIONS`` order -> BraTS 2021 label map, uint8.

    ET -> 4, TC minus ET -> 1, WT minus TC -> 2. A voxel in ET but not in WT (an
    inconsistent prediction) is still ET: inner regions win, as in the BraTS convention.
    """
    et, tc, wt = (np.asarray(regions[i], dtype=bool) for i in range(3))
    label = np.zeros(et.shape, dtype=np.uint8)
    label[wt] = ED
    label[tc] = NCR
    label[et] = ET
    return label
