"""Cases as generator samples: the condition map (brain mask + NCR/ED/ET one-hot), each
modality scaled per case to [0, 1] by a brain percentile, 2D axial slices or 3D patches
drawn with a seeded sampler. Arrays are channel-first float32."""

from __future__ import annotations

import numpy as np

#: BraTS 2021 label values of the condition's tumour channels: NCR, ED, ET
TUMOUR_LABELS: tuple[int, ...] = (1, 2, 4)


def brain_mask(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: voxels where any present modality of ``image`` (C, X, Y, Z) is
    non-zero (skull-stripped BraTS data has a zero background)."""
    return np.any(image != 0, axis=0)


def condition_map(label: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(4, X, Y, Z) float32: brain mask, NCR (1), ED (2), ET (4) one-hot of a BraTS 2021
    label map; tumour voxels count as brain."""
    if label.shape != brain.shape:
        raise ValueError(f"label {label.shape} and brain mask {brain.shape} differ in shape")
    out = np.empty((4, *label.shape), np.float32)
    out[0] = (brain.astype(bool) | (label > 0)).astype(np.float32)
    for i, value in enumerate(TUMOUR_LABELS, start=1):
        out[i] = label == value
    return out
