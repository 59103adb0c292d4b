"""Cases as generator samples: the condition map (brain mask + NCR/ED/ET one-hot), each
modality scaled per case to [0, 1] by a brain percentile, 2D axial slices or 3D patches
drawn with a seeded sampler. Arrays are channel-first float32."""

from __future__ import annotations

import numpy as np


def brain_mask(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: voxels where any present modality of ``image`` (C, X, Y, Z) is
    non-zero (skull-stripped BraTS data has a zero background)."""
    return np.any(image != 0, axis=0)


def condition_map(label: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(4, X, Y, Z) float32: brain mask, NCR (1), ED (2), ET (4) one-hot of a BraTS 2021
    label map; tumour voxels count as brain."""
    raise NotImplementedError  # helper A
