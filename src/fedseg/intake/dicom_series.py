"""Find the MR series of each study in a DICOM folder and map them to T1, T1Gd, T2, FLAIR.

Only headers are read (pydicom, no pixel data), so scanning thousands of files is quick.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from fedseg.intake.config import MappingConfig

_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "Modality",
    "SeriesDescription",
    "ProtocolName",
    "Rows",
    "Columns",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "NumberOfFrames",
    "InstanceNumber",
]


@dataclass
class Series:
    """One DICOM series: header facts and its files (unsorted)."""

    study_uid: str
    series_uid: str
    number: int | None
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    geometries: set[tuple] = field(default_factory=set)
    positions: list[tuple[Path, tuple[float, ...] | None, int]] = field(default_factory=list)
    is_image: bool = True

    @property
    def label(self) -> str:
        """How logs name the series: its number and description (no UIDs)."""
        return f"series {self.number if self.number is not None else '?'} '{self.description}'"

    def sorted_files(self) -> list[Path]:
        """Files ordered along the slice normal (instance number when positions are absent)."""
        geometry = next(iter(self.geometries))
        orient = geometry[2]
        if orient and all(p is not None for _, p, _ in self.positions):
            normal = np.cross(np.asarray(orient[:3]), np.asarray(orient[3:]))
            key = {f: float(np.dot(normal, np.asarray(p))) for f, p, _ in self.positions}
        else:
            key = {f: float(n) for f, _, n in self.positions}
        return sorted(self.files, key=lambda f: key[f])


@dataclass
class Study:
    """A study's series, in series-number order."""

    study_uid: str
    series: list[Series]


@dataclass
class ScanResult:
    studies: list[Study]
    not_dicom: int


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def scan_dicom(root: Path) -> ScanResult:
    """Group every DICOM file under ``root`` by StudyInstanceUID / SeriesInstanceUID."""
    series: dict[tuple[str, str], Series] = {}
    not_dicom = 0
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            not_dicom += 1
            continue
        study_uid, series_uid = _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID")
        if not study_uid or not series_uid:  # DICOMDIR and other non-instance files
            not_dicom += 1
            continue
        key = (study_uid, series_uid)
        if key not in series:
            number = ds.get("SeriesNumber")
            series[key] = Series(
                study_uid,
                series_uid,
                int(number) if number not in (None, "") else None,
                _text(ds, "Modality").upper(),
                _text(ds, "SeriesDescription") or _text(ds, "ProtocolName"),
            )
        s = series[key]
        s.files.append(path)
        s.is_image = s.is_image and "Rows" in ds
        orient = ds.get("ImageOrientationPatient")
        orient_t = tuple(round(float(v), 4) for v in orient) if orient else None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        s.geometries.add((ds.get("Rows"), ds.get("Columns"), orient_t, frames > 1))
        pos = ds.get("ImagePositionPatient")
        number = ds.get("InstanceNumber")
        s.positions.append(
            (
                path,
                tuple(float(v) for v in pos) if pos else None,
                int(number) if number not in (None, "") else 0,
            )
        )
    by_study: dict[str, list[Series]] = defaultdict(list)
    for s in series.values():
        by_study[s.study_uid].append(s)
    studies = [
        Study(uid, sorted(ss, key=lambda s: (s.number is None, s.number or 0, s.description)))
        for uid, ss in sorted(by_study.items())
    ]
    return ScanResult(studies, not_dicom)


def classify(description: str, mapping: MappingConfig) -> list[str]:
    """Modalities whose rule matches a series description (empty, one, or ambiguous many)."""
    return [m for m, rule in mapping.rules.items() if rule.matches(description)]
