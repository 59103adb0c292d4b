"""Subject anatomy from the SRI24 atlas: tissue maps on the chosen grid, varied per subject
by a smooth random deformation, and pushed aside by a tumor's mass effect.

Arrays are in BraTS voxel order (LPS: x to the patient's left, y posterior, z superior).
The atlas files disagree in their orientation codes (the tissue maps are RAS, the T1 is
LAS, each with a matching affine); we bring every map to LPS and write one BraTS affine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from fedseg.data.atlas import load_atlas
from fedseg.data.synth.fields import random_rotation, smooth_noise, warp

#: The affine of BraTS 2021 files on the 1 mm 240x240x155 grid (LPS voxel order).
BRATS_AFFINE = np.array(
    [[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], dtype=np.float64
)


@dataclass(frozen=True)
class Anatomy:
    """Tissue fractions (X, Y, Z) float32 summing to 1 in the brain, the atlas T1's fine
    detail (residual after the tissue model, WM = 1 units), the brain mask, and the grid."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    detail: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    spacing: float

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.wm.shape
        return (s[0], s[1], s[2])


def grid_affine(spacing: float) -> np.ndarray:
    """BraTS affine for a grid of ``spacing`` mm covering the same field of view."""
    s = float(spacing)
    scale = np.diag([s, s, s, 1.0])
    scale[:3, 3] = (s - 1.0) / 2.0  # voxel i's centre sits at 1 mm index i*s + (s-1)/2
    return BRATS_AFFINE @ scale


def _resample(vol: np.ndarray, spacing: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Average a 1 mm volume down to ``spacing`` mm voxels (block mean when integer)."""
    s = float(spacing)
    if s == 1.0:
        return vol.astype(np.float32)
    if s.is_integer():
        k = int(s)
        padded = np.zeros(tuple(n * k for n in shape), dtype=np.float32)
        padded[: vol.shape[0], : vol.shape[1], : vol.shape[2]] = vol
        return padded.reshape(shape[0], k, shape[1], k, shape[2], k).mean(axis=(1, 3, 5))
    smooth = ndi.gaussian_filter(vol.astype(np.float32), sigma=0.42 * s)
    axes = [np.arange(n) * s + (s - 1.0) / 2.0 for n in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    return warp(smooth, coords)


@functools.lru_cache(maxsize=4)
def atlas_on_grid(spacing: float, shape: tuple[int, int, int]) -> Anatomy:
    """The SRI24 atlas as an Anatomy on the ``spacing`` mm grid (cached per process)."""
    atlas = load_atlas()
    # Tissue maps are stored RAS and the T1 LAS (see the module docstring): flip to LPS.
    maps = [m[::-1, ::-1, :] for m in (atlas.csf, atlas.gm, atlas.wm)]
    t1 = atlas.t1[:, ::-1, :]
    csf, gm, wm, t1 = (_resample(np.ascontiguousarray(m), spacing, shape) for m in (*maps, t1))
    total = csf + gm + wm
    brain = total > 0.5
    safe = np.where(brain, total, 1.0)
    csf, gm, wm = (np.where(brain, m / safe, 0.0).astype(np.float32) for m in (csf, gm, wm))
    # The atlas T1's detail beyond the three-tissue model (deep nuclei, vessels, sulci).
    t1n = t1 / max(float(np.median(t1[brain & (wm > 0.9)])), 1e-6)
    model = 0.35 * csf + 0.68 * gm + 1.0 * wm
    detail = np.where(brain & (t1 > 0), np.clip(t1n - model, -0.4, 0.4), 0.0).astype(np.float32)
    return Anatomy(csf, gm, wm, detail, brain, grid_affine(spacing), float(spacing))


def _warped(anat: Anatomy, coords: np.ndarray) -> tuple[np.ndarray, ...]:
    csf, gm, wm, detail = (warp(m, coords) for m in (anat.csf, anat.gm, anat.wm, anat.detail))
    return csf, gm, wm, detail


def _renormalize(
    csf: np.ndarray, gm: np.ndarray, wm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    total = csf + gm + wm
    brain = total > 0.5
    safe = np.where(brain, total, 1.0)
    out = tuple(np.where(brain, m / safe, 0.0).astype(np.float32) for m in (csf, gm, wm))
    return out[0], out[1], out[2], brain


def deform_subject(atlas: Anatomy, rng: np.random.Generator, deformation_mm: float) -> Anatomy:
    """A new subject: the atlas scaled (+-6 % per axis), slightly rotated and warped by a
    smooth random displacement field (std ``deformation_mm``, ~40 mm correlation length)."""
    shape = atlas.shape
    sp = atlas.spacing
    centre = np.array(
        [np.mean(np.flatnonzero(atlas.brain.any(axis=o))) for o in ((1, 2), (0, 2), (0, 1))]
    )
    scale = rng.uniform(0.94, 1.06, 3)
    # Sampling coordinates: out voxel x reads the atlas at c + M (x - c) + d(x).
    m = random_rotation(rng, (3.0, 3.0, 5.0)) @ np.diag(1.0 / scale)
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    coords = np.empty((3, *shape), dtype=np.float32)
    cell = 40.0 / sp
    for d in range(3):
        acc = np.full(shape, centre[d], dtype=np.float32)
        for e in range(3):
            acc += np.float32(m[d, e]) * (grid[e] - np.float32(centre[e]))
        if deformation_mm > 0:
            acc += smooth_noise(shape, cell, rng) * np.float32(deformation_mm / sp)
        coords[d] = acc
    csf, gm, wm, detail = _warped(atlas, coords)
    csf, gm, wm, brain = _renormalize(csf, gm, wm)
    return replace(atlas, csf=csf, gm=gm, wm=wm, detail=detail * brain, brain=brain)


def push_tissue(
    anat: Anatomy, centre_vox: np.ndarray, radius_mm: float, strength: float
) -> Anatomy:
    """Mass effect: tissue around ``centre_vox`` pushed radially outward, by up to
    ``strength * radius_mm`` at the tumor edge, fading over ~1.5 radii beyond it and
    towards the brain surface (the skull does not move)."""
    if strength <= 0:
        return anat
    sp = anat.spacing
    reach = radius_mm * 3.0 + 10.0
    lo = np.maximum(np.floor(centre_vox - reach / sp).astype(int), 0)
    hi = np.minimum(np.ceil(centre_vox + reach / sp).astype(int) + 1, anat.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.mgrid[box].astype(np.float32)
    rel = (grid - centre_vox[:, None, None, None].astype(np.float32)) * np.float32(sp)  # mm
    r = np.sqrt((rel**2).sum(axis=0)) + 1e-3
    amp = strength * radius_mm
    profile = np.where(
        r < radius_mm, r / radius_mm, np.exp(-(((r - radius_mm) / (1.5 * radius_mm)) ** 2))
    )
    depth = ndi.distance_transform_edt(anat.brain[box], sampling=sp)
    profile *= np.clip(depth / (0.5 * radius_mm + 5.0), 0.0, 1.0)
    # Backward warp: the voxel at x shows the tissue that was at x - u(x), nearer the centre.
    coords = grid - (amp * profile / r)[None] * rel / np.float32(sp)
    parts = [warp(m, coords) for m in (anat.csf, anat.gm, anat.wm, anat.detail)]
    out = {k: getattr(anat, k).copy() for k in ("csf", "gm", "wm", "detail")}
    for k, p in zip(("csf", "gm", "wm", "detail"), parts, strict=True):
        out[k][box] = p
    csf, gm, wm, brain = _renormalize(out["csf"], out["gm"], out["wm"])
    return replace(anat, csf=csf, gm=gm, wm=wm, detail=out["detail"] * brain, brain=brain)
