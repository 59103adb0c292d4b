"""Patch sampling on preprocessed volumes (numpy): padding, patch corners, extraction.

Volumes are (C, X, Y, Z); a patch corner is the (x, y, z) index of its first voxel.
"""

from __future__ import annotations

import numpy as np

Shape3 = tuple[int, int, int]


def pad_to(volume: np.ndarray, size: Shape3) -> np.ndarray:
    """Zero-pad (C, X, Y, Z) evenly on both sides of each axis shorter than ``size``."""
    pads = [(0, 0)]
    for s, p in zip(volume.shape[1:], size, strict=True):
        extra = max(0, p - s)
        pads.append((extra // 2, extra - extra // 2))
    return np.pad(volume, pads) if any(a or b for a, b in pads) else volume


def patch_corner(
    shape: Shape3,
    size: Shape3,
    rng: np.random.Generator,
    *,
    tumor: np.ndarray | None = None,
    tumor_p: float = 0.0,
) -> Shape3:
    """Corner of a ``size`` patch inside a volume of ``shape`` (every side >= ``size``).

    With probability ``tumor_p`` (and a non-empty ``tumor``: flat indices of tumor voxels)
    the patch is centred on a random tumor voxel, shifted to stay inside; otherwise the
    corner is uniform over all valid positions.
    """
    hi = np.array(shape) - np.array(size)
    if (hi < 0).any():
        raise ValueError(f"volume {shape} is smaller than the patch {size}; pad it first")
    if tumor is not None and tumor.size and rng.random() < tumor_p:
        centre = np.array(np.unravel_index(int(tumor[rng.integers(tumor.size)]), shape))
        corner = np.clip(centre - np.array(size) // 2, 0, hi)
    else:
        corner = np.array([rng.integers(0, h + 1) for h in hi])
    return (int(corner[0]), int(corner[1]), int(corner[2]))


def extract(volume: np.ndarray, corner: Shape3, size: Shape3) -> np.ndarray:
    """The (C, *size) patch of (C, X, Y, Z) ``volume`` at ``corner``: a copy in memory
    (also of a memory-mapped volume)."""
    sl = tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))
    return np.array(volume[(slice(None), *sl)])
