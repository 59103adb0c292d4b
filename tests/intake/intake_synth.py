"""Test data for intake: synthetic MR volumes written as DICOM series, and a minimal case
on the SRI24 grid moved by known rigid transforms (the realistic generator lives elsewhere)."""

from __future__ import annotations

import datetime
import gzip
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENT = {
    "PatientName": "DOE^JANE",
    "PatientID": "PAT-0001",
    "PatientBirthDate": "19700314",
    "AccessionNumber": "ACC98765",
    "InstitutionName": "SAINT EXAMPLE HOSPITAL",
    "ReferringPhysicianName": "HOUSE^GREGORY",
}
#: Series descriptions and the modality the default mapping must find for each.
SERIES = {"t1": "T1 AX", "t1ce": "T1 POST GD", "t2": "T2 AX", "flair": "FLAIR AX"}


def blob_volume(shape: tuple[int, int, int], seed: int, scale: float) -> np.ndarray:
    """An (X, Y, Z) int16 head-like volume: an ellipsoid with a brighter off-center blob."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float32)
    c = (np.asarray(shape, dtype=np.float32) - 1) / 2
    r = ((idx - c[:, None, None, None]) / (c[:, None, None, None] * 0.8)) ** 2
    head = r.sum(axis=0) < 1
    blob = ((idx[0] - c[0] * 1.3) ** 2 + (idx[1] - c[1]) ** 2 + (idx[2] - c[2]) ** 2) < 16
    vol = head * scale + blob * scale * 0.7 + rng.normal(0, scale * 0.02, shape) * head
    return np.clip(vol, 0, 32000).astype(np.int16)


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    study_uid: str,
    description: str,
    number: int,
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
    modality: str = "MR",
    patient: dict[str, str] | None = None,
    tags: dict[str, object] | None = None,
) -> list[Path]:
    """Write an (X, Y, Z) int16 volume as one axial DICOM series, one file per z slice.

    ``tags``: more header values by keyword (acquisition parameters: RepetitionTime, ...).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, frame_uid = generate_uid(), generate_uid()
    nx, ny, nz = volume.shape
    origin = np.array([-nx * spacing[0] / 2, -ny * spacing[1] / 2, -nz * spacing[2] / 2])
    today = datetime.date(2024, 5, 17).strftime("%Y%m%d")
    paths = []
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{re.sub(r'[^A-Za-z0-9_-]', '_', description)}_{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        for key, value in (patient or PATIENT).items():
            setattr(ds, key, value)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = ds.SeriesDate = today
        ds.StudyTime = "101500"
        ds.StudyID = "STUDY42"
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(v) for v in origin + np.array([0.0, 0.0, k * spacing[2]])]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        for key, value in (tags or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).tobytes()  # rows = y
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_study(
    folder: Path, seed: int = 0, shape: tuple[int, int, int] = (40, 36, 20), extra: bool = True
) -> tuple[str, dict[str, np.ndarray]]:
    """Four MR series (plus, if ``extra``, a CT localizer and an unmapped MR series).

    Returns the StudyInstanceUID and the volume written for each modality.
    """
    study_uid = generate_uid()
    vols = {}
    for i, (m, desc) in enumerate(SERIES.items()):
        vols[m] = blob_volume(shape, seed + i, 300.0 * (i + 1))
        write_series(folder / m, vols[m], study_uid=study_uid, description=desc, number=i + 2)
    if extra:
        write_series(
            folder / "ct",
            blob_volume(shape, seed, 100.0),
            study_uid=study_uid,
            description="HEAD CT",
            number=20,
            modality="CT",
        )
        write_series(
            folder / "loc",
            blob_volume((shape[0], shape[1], 3), seed, 50.0),
            study_uid=study_uid,
            description="LOCALIZER",
            number=1,
        )
    return study_uid, vols


def sitk_of(volume: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """Helper for comparisons: the (X, Y, Z) array as a SimpleITK image with ``spacing``."""
    img = sitk.GetImageFromArray(volume.transpose(2, 1, 0).astype(np.float32))
    img.SetSpacing(spacing)
    return img


def assert_phi_free(root: Path, study_uid: str, more: Iterable[str] = ()) -> None:
    """No identifying value in any file name under ``root``, nor anywhere in any file's
    (decompressed) bytes: NIfTI headers, voxels, logs. ``more``: further values (e.g. the
    series and instance UIDs a linkage records)."""
    needles = [*PATIENT.values(), "DOE", "JANE", "STUDY42", study_uid, *more]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in root.rglob("*"):
        content = path.read_bytes() if path.is_file() else b""
        if path.name.endswith(".gz"):
            content = gzip.decompress(content)
        for n in needles:
            assert n.lower() not in path.name.lower(), (path, n)
            assert n.encode() not in content, (path, n)
