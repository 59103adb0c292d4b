"""NIfTI reading and writing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data import nifti
from fedseg.errors import FedsegError


def test_save_load_round_trip(tmp_path: Path, factory) -> None:
    image, label = factory.volumes()
    nifti.save(tmp_path / "a" / "img.nii.gz", image[0], factory.affine)
    nifti.save(tmp_path / "a" / "seg.nii.gz", label, factory.affine, label=True)
    back = nifti.load_array(tmp_path / "a" / "img.nii.gz")
    assert back.dtype == np.float32
    assert np.array_equal(back, image[0])
    seg = nib.load(str(tmp_path / "a" / "seg.nii.gz"))
    assert seg.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(seg.dataobj), label)
    assert np.allclose(nifti.load_header(tmp_path / "a" / "img.nii.gz").affine, factory.affine)
    assert np.array_equal(nifti.load_array(tmp_path / "a" / "seg.nii.gz", dtype=np.int32), label)


def test_channel_and_singleton_axis(tmp_path: Path, factory) -> None:
    data = np.stack([np.full((3, 4, 5), float(i)) for i in range(4)], axis=-1)
    factory.save_raw(tmp_path / "4d.nii.gz", data)
    assert nifti.load_array(tmp_path / "4d.nii.gz", channel=2).shape == (3, 4, 5)
    assert np.all(nifti.load_array(tmp_path / "4d.nii.gz", channel=2) == 2)
    with pytest.raises(FedsegError, match="no channel 4"):
        nifti.load_array(tmp_path / "4d.nii.gz", channel=4)
    factory.save_raw(tmp_path / "s.nii.gz", data[..., :1])
    assert nifti.load_array(tmp_path / "s.nii.gz").shape == (3, 4, 5)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(FedsegError, match="file not found"):
        nifti.load_header(tmp_path / "nope.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    with pytest.raises(FedsegError, match="not a readable NIfTI"):
        nifti.load_array(bad)


def test_truncated_data_is_a_fedseg_error(tmp_path: Path, factory) -> None:
    path = factory.save_raw(tmp_path / "t.nii", np.ones((20, 20, 20), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:2000])  # header intact, voxels cut
    with pytest.raises(FedsegError, match="cannot be read"):
        nifti.load_array(path)


def test_spacing_of_rotated_affine() -> None:
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.5, 2.0, 3.0])
    assert np.allclose(nifti.spacing_of(affine), [0.5, 2.0, 3.0])
