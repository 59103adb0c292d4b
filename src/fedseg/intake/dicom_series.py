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
    # Enhanced MR (one multi-frame file): the same facts in other places.
    "AcquisitionContrast",
    "EchoPulseSequence",
    "EchoPlanarPulseSequence",
    "PulseSequenceName",
    "ContrastBolusAgentSequence",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
]


@dataclass(frozen=True)
class Acquisition:
    """Standard acquisition tags of a series (no vendor private tags).

    Times in ms; multi-valued codes as upper-case tuples (ScanningSequence ``("SE", "IR")``);
    ``contrast_agent`` is the first set of ContrastBolusAgent / -Ingredient, or a volume or
    dose above 0 written as such, else ``""``. Enhanced MR files keep these facts in
    functional groups and pulse-sequence attributes; ``read_acquisition`` reads them from
    there when the classic tags are absent, and ``acquisition_contrast`` is their
    AcquisitionContrast (0008,9209: T1, T2, FLUID_ATTENUATED, ...).
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
    acquisition_contrast: str = ""

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
            "AcquisitionContrast": self.acquisition_contrast,
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
    return _as_float(ds.get(keyword))


def _as_float(value: object) -> float | None:
    """A DICOM number (DS, IS, FD, the first of several) as float; None when absent or bad."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    if not isinstance(value, int | float | str) or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _codes(ds: pydicom.Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value in (None, ""):
        return ()
    values = value if isinstance(value, MultiValue) else str(value).split("\\")
    return tuple(str(v).strip().upper() for v in values if str(v).strip())


def _functional(ds: pydicom.Dataset, group: str, keyword: str) -> object:
    """``keyword`` in functional group ``group`` of an enhanced file (shared, else frame 1)."""
    for holder in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(holder)
        inner = items[0].get(group) if items else None
        if inner and keyword in inner[0]:
            return inner[0].get(keyword)
    return None


def _enhanced_sequence(ds: pydicom.Dataset) -> tuple[str, ...]:
    """ScanningSequence codes from an enhanced file's EchoPulseSequence and modifiers."""
    pulse = _text(ds, "EchoPulseSequence").upper()
    codes = {"SPIN": ("SE",), "GRADIENT": ("GR",), "BOTH": ("SE", "GR")}.get(pulse, ())
    if not codes:
        return ()
    inversion = str(_functional(ds, "MRModifierSequence", "InversionRecovery") or "").upper()
    if inversion == "YES":
        codes += ("IR",)
    if _text(ds, "EchoPlanarPulseSequence").upper() == "YES":
        codes += ("EP",)
    return codes


def _contrast_agent(ds: pydicom.Dataset) -> str:
    for keyword in ("ContrastBolusAgent", "ContrastBolusIngredient"):
        text = _text(ds, keyword)
        if text and text.lower() not in {"none", "no", "n", "0", "-", "n/a", "na"}:
            return text
    for keyword in ("ContrastBolusVolume", "ContrastBolusTotalDose"):
        amount = _number(ds, keyword)
        if amount:
            return f"{keyword} {amount:g}"
    coded = ds.get("ContrastBolusAgentSequence")
    if coded:
        return str(coded[0].get("CodeMeaning") or coded[0].get("CodeValue") or "coded agent")
    return ""


def read_acquisition(ds: pydicom.Dataset) -> Acquisition:
    """The acquisition facts of one file's header (classic MR, else enhanced MR places)."""

    def first(keyword: str, group: str, inner: str) -> float | None:
        value = _number(ds, keyword)
        return value if value is not None else _as_float(_functional(ds, group, inner))

    timing = "MRTimingAndRelatedParametersSequence"
    return Acquisition(
        repetition_time=first("RepetitionTime", timing, "RepetitionTime"),
        echo_time=first("EchoTime", "MREchoSequence", "EffectiveEchoTime"),
        inversion_time=first("InversionTime", "MRModifierSequence", "InversionTimes"),
        flip_angle=first("FlipAngle", timing, "FlipAngle"),
        scanning_sequence=_codes(ds, "ScanningSequence") or _enhanced_sequence(ds),
        sequence_variant=_codes(ds, "SequenceVariant"),
        scan_options=_codes(ds, "ScanOptions"),
        acquisition_type=_text(ds, "MRAcquisitionType").upper(),
        sequence_name=_text(ds, "SequenceName") or _text(ds, "PulseSequenceName"),
        field_strength=_number(ds, "MagneticFieldStrength"),
        image_type=_codes(ds, "ImageType"),
        contrast_agent=_contrast_agent(ds),
        acquisition_contrast=_text(ds, "AcquisitionContrast").upper(),
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
