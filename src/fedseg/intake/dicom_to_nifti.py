"""``fedseg intake dicom``: one de-identified BraTS-2021 case folder per DICOM study.

Each study needs exactly one series per modality (T1, T1Gd, T2, FLAIR) after the mapping
rules and acquisition parameters (``series_classifier.classify_study``); anything else is
skipped with a reason. Output files carry only voxels and geometry:
the case id is a keyed pseudonym and no DICOM text is copied into a NIfTI header. When the
mapping names a ``linkage`` folder, each case's way back to its study is kept there, and
only there (``intake.linkage``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from fedseg.data import nifti
from fedseg.data.cases import FILE_KEYS, MODALITIES
from fedseg.data.labels import Layout
from fedseg.errors import FedsegError
from fedseg.intake import itk_bridge
from fedseg.intake.config import MappingConfig
from fedseg.intake.deidentify import (
    IDENTIFYING_KEYWORDS,
    ensure_clean,
    identifier_strings,
    pseudonym,
)
from fedseg.intake.dicom_series import Series, Study, scan_dicom
from fedseg.intake.linkage import write_linkage
from fedseg.intake.series_classifier import classify_study

PARTIAL = ".partial"


@dataclass
class StudyOutcome:
    """What happened to one study: ``converted``/``exists``/``skipped``, and the reasons."""

    case_id: str
    status: str
    notes: list[str] = field(default_factory=list)


@dataclass
class DicomReport:
    outcomes: list[StudyOutcome]
    not_dicom: int

    @property
    def converted(self) -> list[str]:
        return [o.case_id for o in self.outcomes if o.status == "converted"]

    def lines(self) -> list[str]:
        """Human-readable log lines (pseudonyms, series numbers and descriptions only)."""
        out = [
            f"{o.case_id}: {o.status}" + "".join(f"; {n}" for n in o.notes) for o in self.outcomes
        ]
        if self.not_dicom:
            out.append(f"{self.not_dicom} file(s) skipped: not DICOM instances")
        return out


def case_paths(folder: Path, case_id: str) -> dict[str, Path]:
    """The BraTS-2021 file of each modality in a case folder."""
    keys = FILE_KEYS[Layout.BRATS2021]
    return {m: folder / f"{case_id}{keys[m]}.nii.gz" for m in MODALITIES}


def read_series(series: Series) -> sitk.Image:
    """A series as one float32 volume; a FedsegError if it is not one regular stack."""
    if len(series.geometries) != 1:
        raise FedsegError(
            f"{series.label}: {len(series.geometries)} different slice geometries "
            "(several stacks in one series); export one stack per series"
        )
    files = [str(f) for f in series.sorted_files()]
    try:
        if len(files) == 1:  # one enhanced / multi-frame file
            image = sitk.ReadImage(files[0], sitk.sitkFloat32)
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            reader.MetaDataDictionaryArrayUpdateOff()
            reader.LoadPrivateTagsOff()
            image = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise FedsegError(f"{series.label}: SimpleITK cannot read it ({first})") from None
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise FedsegError(f"{series.label}: not a 3D volume (size {image.GetSize()})")
    return image


def _study_identifiers(study: Study) -> set[str]:
    values: list[object] = []
    for s in study.series:
        ds = pydicom.dcmread(s.files[0], stop_before_pixels=True)
        values += [ds.get(k) for k in IDENTIFYING_KEYWORDS if ds.get(k) is not None]
    return identifier_strings(values)


def convert_study(study: Study, chosen: dict[str, Series], out: Path, case_id: str) -> Path:
    """Write the four chosen series as ``out/<case_id>/<case_id>_<m>.nii.gz`` (atomically)."""
    identifiers = _study_identifiers(study)
    staging = out / PARTIAL / case_id
    shutil.rmtree(staging, ignore_errors=True)
    paths = case_paths(staging, case_id)
    for m in MODALITIES:
        image = read_series(chosen[m])
        nifti.save(paths[m], itk_bridge.to_array(image), itk_bridge.affine_of(image))
        ensure_clean(paths[m], identifiers, digest=case_id.rsplit("_", 1)[-1])
    final = out / case_id
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def _link(root: Path, out: Path, case_id: str, study: Study, chosen: dict[str, Series]) -> None:
    """Keep the site's private linkage of a written case (also for one written before)."""
    grids = {}
    for m, path in case_paths(out / case_id, case_id).items():
        header = nifti.load_header(path)
        grids[m] = (np.asarray(header.affine), tuple(int(v) for v in header.shape[:3]))
    write_linkage(root, case_id, study.study_uid, chosen, grids)


def _check_linkage_place(linkage: Path, root: Path, out: Path) -> None:
    """The linkage holds patient data: never inside the de-identified output (which must be
    free of it) nor the DICOM input (its headers would be scanned as instances)."""
    place = linkage.resolve()
    for folder, what in ((out, "the output folder"), (root, "the DICOM folder")):
        if place == folder.resolve() or folder.resolve() in place.parents:
            raise FedsegError(
                f"linkage {linkage} is inside {what} {folder}: give it a folder of its own "
                "(it holds patient identifiers and stays at the site)"
            )


def convert_dicom(
    root: Path,
    out: Path,
    mapping: MappingConfig,
    on_study: Callable[[StudyOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> DicomReport:
    """Convert every complete MR study under ``root`` into ``out`` (BraTS 2021 layout).

    Studies whose case folder is already complete are left alone, so a rerun resumes.
    """
    root, out = Path(root), Path(out)
    salt = mapping.resolved_salt()
    if mapping.linkage is not None:
        _check_linkage_place(mapping.linkage, root, out)
    scan = scan_dicom(root)
    out.mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start(len(scan.studies))
    outcomes = []
    for study in scan.studies:
        case_id = pseudonym(study.study_uid, salt, mapping.case_prefix)
        verdict = classify_study(study, mapping)
        chosen, notes = verdict.chosen, verdict.notes
        if not verdict.complete:
            outcome = StudyOutcome(case_id, "skipped", notes)
        elif all(p.exists() for p in case_paths(out / case_id, case_id).values()):
            outcome = StudyOutcome(case_id, "exists", notes)
        else:
            try:
                convert_study(study, chosen, out, case_id)
                outcome = StudyOutcome(case_id, "converted", notes)
            except FedsegError as exc:
                outcome = StudyOutcome(case_id, "skipped", [*notes, str(exc)])
        if mapping.linkage is not None and outcome.status in ("converted", "exists"):
            _link(mapping.linkage, out, case_id, study, chosen)
        outcomes.append(outcome)
        if on_study:
            on_study(outcome)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    report = DicomReport(outcomes, scan.not_dicom)
    (out / "intake_dicom.log").write_text("\n".join(report.lines()) + "\n")
    return report
