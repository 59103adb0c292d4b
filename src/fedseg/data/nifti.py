"""NIfTI reading and writing with nibabel: arrays in the file's voxel order, float32 images."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fedseg.errors import DataError


def load_header(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file lazily (header only; data is read on first access)."""
    try:
        return nib.load(str(path))  # type: ignore[return-value]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: not a readable NIfTI file ({exc})") from None


def load_array(path: Path, channel: int | None = None, dtype: type = np.float32) -> np.ndarray:
    """Read a volume (X, Y, Z); for a 4D file, ``channel`` picks the last-axis index.

    A trailing singleton axis (X, Y, Z, 1), as some atlases store, is dropped.
    """
    img = load_header(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: image data cannot be read ({exc}); re-export it") from None
    if channel is not None:
        if data.ndim != 4 or channel >= data.shape[3]:
            raise DataError(f"{path}: no channel {channel} in image of shape {data.shape}")
        data = data[..., channel]
    elif data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return np.asarray(data, dtype=dtype)


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in mm (3,) from a 4x4 affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def save(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    label: bool = False,
    descrip: str | None = None,
) -> None:
    """Write a 3D volume; labels as uint8, images as float32. Parent folders are created.
    ``descrip``: the header's description (at most 79 ASCII characters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data, dtype=np.uint8 if label else np.float32)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    if descrip is not None:
        img.header["descrip"] = descrip.encode("ascii")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def read_descrip(path: Path) -> str:
    """The header's description field (``descrip``), decoded; empty when there is none."""
    raw = load_header(path).header.get("descrip")
    if raw is None:
        return ""
    value = raw.item() if hasattr(raw, "item") else raw
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.rstrip("\x00").strip()
