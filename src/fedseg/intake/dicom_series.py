"""Find the MR series of each study in a DICOM folder, with the header facts that classify them.

Only headers are read (pydicom, no pixel data), so scanning thousands of files is quick. The
acquisition parameters of a series (``Acquisition``) come from its first file; times in ms,
as DICOM stores them. Which modality a series is: ``fedseg.intake.series_classifier``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from fedseg.errors import FedsegError

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
    "ImageType",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "SequenceName",
    "MagneticFieldStrength",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "ContrastBolusVolume",
    "ContrastBolusTotalDose",
    "ContrastBolusIngredient",
]


@dataclass(frozen=True)
class Acquisition:
    """Standard acquisition tags of a series (no vendor private tags).

    Times in ms; multi-valued codes as upper-case tuples (ScanningSequence ``("SE", "IR")``);
    ``contrast_agent`` is the first set of ContrastBolusAgent / -Ingredient, or a volume or
    dose above 0 written as such, else ``""``.
    """

    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    flip_angle: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    acquisition_type: str = ""
    sequence_name: str = ""
    field_strength: float | None = None
    image_type: tuple[str, ...] = ()
    contrast_agent: str = ""

    @property
    def is_3d(self) -> bool:
        return self.acquisition_type == "3D"

    @property
    def is_derived(self) -> bool:
        return bool(self.image_type) and self.image_type[0] == "DERIVED"

    def facts(self) -> dict[str, object]:
        """The values that are set, under their DICOM keywords (for logs and ``--json``)."""
        out = {
            "RepetitionTime": self.repetition_time,
            "EchoTime": self.echo_time,
            "InversionTime": self.inversion_time,
            "FlipAngle": self.flip_angle,
            "ScanningSequence": "\\".join(self.scanning_sequence),
            "SequenceVariant": "\\".join(self.sequence_variant),
            "ScanOptions": "\\".join(self.scan_options),
            "MRAcquisitionType": self.acquisition_type,
            "SequenceName": self.sequence_name,
            "MagneticFieldStrength": self.field_strength,
            "ImageType": "\\".join(self.image_type),
            "ContrastBolusAgent": self.contrast_agent,
        }
        return {k: v for k, v in out.items() if v not in (None, "")}


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
    acquisition: Acquisition = field(default_factory=Acquisition)

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


def _number(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _codes(ds: pydicom.Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value in (None, ""):
        return ()
    values = value if isinstance(value, MultiValue) else str(value).split("\\")
    return tuple(str(v).strip().upper() for v in values if str(v).strip())


def _contrast_agent(ds: pydicom.Dataset) -> str:
    for keyword in ("ContrastBolusAgent", "ContrastBolusIngredient"):
        text = _text(ds, keyword)
        if text and text.lower() not in {"none", "no", "n", "0", "-", "n/a", "na"}:
            return text
    for keyword in ("ContrastBolusVolume", "ContrastBolusTotalDose"):
        amount = _number(ds, keyword)
        if amount:
            return f"{keyword} {amount:g}"
    return ""


def read_acquisition(ds: pydicom.Dataset) -> Acquisition:
    """The acquisition facts of one file's header."""
    return Acquisition(
        repetition_time=_number(ds, "RepetitionTime"),
        echo_time=_number(ds, "EchoTime"),
        inversion_time=_number(ds, "InversionTime"),
        flip_angle=_number(ds, "FlipAngle"),
        scanning_sequence=_codes(ds, "ScanningSequence"),
        sequence_variant=_codes(ds, "SequenceVariant"),
        scan_options=_codes(ds, "ScanOptions"),
        acquisition_type=_text(ds, "MRAcquisitionType").upper(),
        sequence_name=_text(ds, "SequenceName"),
        field_strength=_number(ds, "MagneticFieldStrength"),
        image_type=_codes(ds, "ImageType"),
        contrast_agent=_contrast_agent(ds),
    )


def scan_dicom(root: Path) -> ScanResult:
    """Group every DICOM file under ``root`` by StudyInstanceUID / SeriesInstanceUID.

    A FedsegError when ``root`` is not a folder or holds no DICOM instance.
    """
    if not Path(root).is_dir():
        raise FedsegError(f"{root}: not a folder; give the folder that holds the DICOM files")
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
                acquisition=read_acquisition(ds),
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
    if not studies:
        raise FedsegError(f"{root}: no DICOM instances found (searched {not_dicom} files)")
    return ScanResult(studies, not_dicom)
