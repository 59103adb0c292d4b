"""Intensity preprocessing shared by training and inference (numpy only).

The FeTS recipe crops all-zero planes (the background outside the skull-stripped brain) and
z-scores the non-zero voxels of each modality.
"""

from __future__ import annotations

import numpy as np

Box = tuple[slice, slice, slice]


def nonzero_box(image: np.ndarray, margin: int = 0) -> Box:
    """Bounding box (three slices) of voxels non-zero in any channel of ``image`` (C, X, Y, Z).

    An all-zero image gives the full extent.
    """
    mask = np.any(image != 0, axis=0)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        if nz.size == 0:
            return (slice(0, mask.shape[0]), slice(0, mask.shape[1]), slice(0, mask.shape[2]))
        lo = max(int(nz[0]) - margin, 0)
        hi = min(int(nz[-1]) + 1 + margin, mask.shape[axis])
        box.append(slice(lo, hi))
    return (box[0], box[1], box[2])


def zscore_nonzero(image: np.ndarray) -> np.ndarray:
    """Per channel, z-score the non-zero voxels of (C, X, Y, Z); zeros stay zero. float32.

    Mean and standard deviation are accumulated in float64 without float64 copies of the
    volume (a full-size case would otherwise need several times its own size).
    """
    out = np.zeros(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        mask = image[c] != 0
        if not mask.any():
            continue
        vals = image[c][mask].astype(np.float32, copy=False)
        mean = float(vals.mean(dtype=np.float64))
        std = float(vals.std(dtype=np.float64))
        vals -= np.float32(mean)
        vals /= np.float32(std if std > 0 else 1.0)
        out[c][mask] = vals
    return out


def crop_and_normalize(image: np.ndarray) -> tuple[np.ndarray, Box]:
    """Crop (C, X, Y, Z) to its non-zero box and z-score it; returns (cropped, box)."""
    box = nonzero_box(image)
    return zscore_nonzero(image[(slice(None), *box)]), box


def uncrop(
    cropped: np.ndarray, box: Box, shape: tuple[int, int, int], fill: float = 0
) -> np.ndarray:
    """Place ``cropped`` (..., x, y, z) back into a full grid ``shape`` at ``box``."""
    out = np.full((*cropped.shape[:-3], *shape), fill, dtype=cropped.dtype)
    out[(..., *box)] = cropped
    return out
