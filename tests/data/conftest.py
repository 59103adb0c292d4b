"""Tiny NIfTI cases written directly in each of the three layouts (no synthetic generator)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data.cases import FILE_KEYS, MODALITIES, MSD_CHANNELS
from fedseg.data.labels import Layout, from_brats2021

#: Non-cubic so that a swapped axis shows up as a shape error.
SHAPE = (10, 12, 8)
#: 1.5 mm isotropic voxels, origin away from zero.
AFFINE = np.array(
    [[1.5, 0, 0, -7.0], [0, 1.5, 0, -9.0], [0, 0, 1.5, -6.0], [0, 0, 0, 1]], dtype=np.float64
)
#: The mean intensity of each modality, so that a loaded channel order can be checked.
MODALITY_LEVEL = {"t1": 100.0, "t1ce": 200.0, "t2": 300.0, "flair": 400.0}


def make_volumes(
    seed: int = 0, shape: tuple[int, int, int] = SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """A (4, X, Y, Z) float32 image in MODALITIES order (a box of "brain" with a per-modality
    level and noise, zero outside) and a BraTS 2021 label (X, Y, Z): ED shell, NCR, ET core."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, dtype=bool)
    brain[1:-1, 1:-1, 1:-1] = True
    image = np.zeros((4, *shape), dtype=np.float32)
    for i, m in enumerate(MODALITIES):
        image[i][brain] = MODALITY_LEVEL[m] + rng.normal(0, 5, int(brain.sum()))
    label = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    label[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] - 2 : c[2] + 2] = 2
    label[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 1 : c[2] + 1] = 1
    label[c[0] - 1 : c[0] + 1, c[1] - 1 : c[1] + 1, c[2] - 1 : c[2] + 1] = 4
    return image, label


def save_raw(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Write ``data`` as-is (its dtype kept) to a NIfTI file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64)), str(path))
    return path


def write_layout_case(
    root: Path,
    layout: Layout,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray | None,
    affine: np.ndarray = AFFINE,
) -> None:
    """Write one case in ``layout`` under ``root``; ``label`` is given in BraTS 2021 values and
    converted to the layout's own values on disk."""
    disk_label = None if label is None else from_brats2021(label, layout)
    if layout is Layout.MSD:
        stacked = np.zeros((*image.shape[1:], 4), dtype=np.float32)
        for m, ch in MSD_CHANNELS.items():
            stacked[..., ch] = image[MODALITIES.index(m)]
        save_raw(root / "imagesTr" / f"{case_id}.nii.gz", stacked, affine)
        if disk_label is not None:
            save_raw(root / "labelsTr" / f"{case_id}.nii.gz", disk_label, affine)
        return
    keys = FILE_KEYS[layout]
    folder = root / case_id
    for i, m in enumerate(MODALITIES):
        save_raw(folder / f"{case_id}{keys[m]}.nii.gz", image[i], affine)
    if disk_label is not None:
        save_raw(folder / f"{case_id}{keys['seg']}.nii.gz", disk_label, affine)


@pytest.fixture(params=list(Layout), ids=[x.value for x in Layout])
def layout(request: pytest.FixtureRequest) -> Layout:
    return request.param


class CaseFactory:
    """The helpers above as one fixture, so test modules need not import conftest (a module
    name other test folders share)."""

    shape = SHAPE
    affine = AFFINE
    level = MODALITY_LEVEL
    volumes = staticmethod(make_volumes)
    save_raw = staticmethod(save_raw)
    write = staticmethod(write_layout_case)


@pytest.fixture
def factory() -> CaseFactory:
    return CaseFactory()
