"""Smooth random fields and warping on voxel grids (numpy/scipy), shared by anatomy,
tumor and scanner models."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _upsample_matrix(n_out: int, n_coarse: int) -> np.ndarray:
    """(n_out, n_coarse) normalized Gaussian weights spreading coarse nodes over n_out voxels."""
    pos = np.linspace(0.0, n_coarse - 1.0, n_out)[:, None]
    w = np.exp(-0.5 * ((pos - np.arange(n_coarse)[None, :]) / 0.7) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(
    shape: tuple[int, ...], cell_vox: float | tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """Smooth Gaussian noise (float32, ~unit std) on ``shape`` with a correlation length of
    about ``cell_vox`` voxels per axis; made separably from a coarse grid, so it is fast
    even on the full 240x240x155 grid."""
    cells = np.broadcast_to(np.asarray(cell_vox, dtype=float), (len(shape),))
    coarse_shape = tuple(max(2, int(np.ceil(n / c)) + 2) for n, c in zip(shape, cells, strict=True))
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    for axis, n in enumerate(shape):
        m = _upsample_matrix(n, coarse_shape[axis])
        field = np.moveaxis(np.tensordot(m, np.moveaxis(field, axis, 0), axes=(1, 0)), 0, axis)
    std = float(field.std())
    return field / (std if std > 0 else 1.0)


def warp(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample ``volume`` (X, Y, Z) at voxel coordinates ``coords`` (3, ...); 0 outside."""
    return ndi.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0).astype(
        np.float32, copy=False
    )


def random_rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    """A 3x3 rotation: small random angles (degrees, at most ``max_deg``) about x, y, z."""
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
