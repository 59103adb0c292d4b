"""SimpleITK images <-> numpy arrays with a NIfTI (RAS) affine.

SimpleITK works in LPS physical coordinates with arrays indexed (z, y, x); fedseg's NIfTI
arrays are indexed (x, y, z) with a RAS affine. These two functions are the only place the
conversion is written down.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def affine_of(image: sitk.Image) -> np.ndarray:
    """4x4 RAS affine (voxel index (i, j, k) -> mm) of a 3D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_RAS @ origin
    return affine


def to_array(image: sitk.Image, dtype: type = np.float32) -> np.ndarray:
    """Voxels as an (X, Y, Z) array."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0)).astype(dtype)


def from_array(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image from an (X, Y, Z) array and its RAS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    set_geometry(image, affine)
    return image


def set_geometry(image: sitk.Image, affine: np.ndarray) -> None:
    """Give ``image`` the origin, spacing and direction of a RAS affine (in place)."""
    lps = _LPS_RAS @ np.asarray(affine, dtype=np.float64)[:3, :4]
    spacing = np.sqrt((lps[:, :3] ** 2).sum(axis=0))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:, 3]))


def reference_grid(
    affine: np.ndarray, shape: tuple[int, int, int], spacing: float | None
) -> sitk.Image:
    """An empty image on the grid of (``affine``, ``shape``), resampled to isotropic ``spacing``
    mm when given: the same field of view and axes, fewer voxels (edges of the box kept)."""
    ref = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
    set_geometry(ref, affine)
    if spacing is None:
        return ref
    old = np.asarray(ref.GetSpacing())
    extent = old * np.asarray(shape)
    size = [max(1, round(float(e / spacing))) for e in extent]
    direction = np.asarray(ref.GetDirection()).reshape(3, 3)
    # The old box's corner is half a voxel before the first center; keep that corner fixed.
    corner = np.asarray(ref.GetOrigin()) - direction @ (old / 2)
    out = sitk.Image(size, sitk.sitkFloat32)
    out.SetSpacing((float(spacing),) * 3)
    out.SetDirection(ref.GetDirection())
    out.SetOrigin(tuple(float(v) for v in corner + direction @ np.full(3, spacing / 2)))
    return out
