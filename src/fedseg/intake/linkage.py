"""The site's private linkage: from a pseudonymous case back to the DICOM study it came from.

``fedseg intake dicom`` keeps it when the mapping YAML names a ``linkage:`` folder (nothing
is kept otherwise, so the default still writes no identifying value anywhere). It holds
patient identifiers and never leaves the site. Per case, ``LINKAGE/<case_id>/``:

- ``linkage.json``: the StudyInstanceUID and, per modality, the SeriesInstanceUID, series
  number and description, the grid of the NIfTI image written from it (RAS ``affine``,
  ``shape``) and its SOPInstanceUIDs in slice order (slice ``k`` of the NIfTI image);
- ``t1ce/<k>.dcm``: header-only copies (no pixel data) of the T1Gd series' instances, in
  slice order. A DICOM SEG (``intake.dicom_seg``) references that series and takes the
  patient, study and frame-of-reference modules and the plane positions from them.

The transforms from a harmonized case's grid back to the source series are the case's own
(``<case>/intake/<m>_to_atlas.tfm`` and ``summary.json``, written by ``intake preprocess``);
the linkage records the source grid they must map to.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError
from fedseg.intake.dicom_series import Series

LINKAGE_FILE = "linkage.json"
#: The series a DICOM SEG references: the one the harmonized label follows (T1Gd).
REFERENCE = "t1ce"
FORMAT = 1


@dataclass(frozen=True)
class SourceSeries:
    """One source series of a case: identity and the grid of the NIfTI image made from it."""

    series_uid: str
    number: int | None
    description: str
    affine: np.ndarray
    shape: tuple[int, int, int]
    instance_uids: tuple[str, ...]


@dataclass(frozen=True)
class CaseLinkage:
    """A case's linkage record (see the module docstring); ``folder`` is where it lives."""

    case_id: str
    study_uid: str
    series: dict[str, SourceSeries]
    folder: Path

    def reference_headers(self) -> list[pydicom.Dataset]:
        """The T1Gd instances' headers in slice order (no pixel data)."""
        files = sorted((self.folder / REFERENCE).glob("*.dcm"), key=lambda p: int(p.stem))
        if len(files) != len(self.series[REFERENCE].instance_uids):
            raise FedsegError(
                f"{self.folder}: the linkage of case {self.case_id} is incomplete; rerun "
                "`fedseg intake dicom` on its DICOM folder with the same mapping YAML"
            )
        return [pydicom.dcmread(f) for f in files]


def write_linkage(
    root: Path,
    case_id: str,
    study_uid: str,
    chosen: dict[str, Series],
    grids: dict[str, tuple[np.ndarray, tuple[int, int, int]]],
) -> Path:
    """Record ``case_id``'s source study under ``root`` (atomically; replaces an old record).

    ``chosen`` are the series converted, ``grids`` the (affine, shape) of each NIfTI image."""
    root = Path(root)
    final = root / case_id
    staging = root / f".{case_id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / REFERENCE).mkdir(parents=True)
    series = {}
    for m in MODALITIES:
        s = chosen[m]
        files = s.sorted_files()
        uids = []
        for k, f in enumerate(files):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            uids.append(str(ds.SOPInstanceUID))
            if m == REFERENCE:
                ds.save_as(staging / REFERENCE / f"{k}.dcm", enforce_file_format=True)
        affine, shape = grids[m]
        series[m] = {
            "series_uid": s.series_uid,
            "number": s.number,
            "description": s.description,
            "affine": np.asarray(affine).tolist(),
            "shape": [int(v) for v in shape],
            "instance_uids": uids,
        }
    record = {"format": FORMAT, "case_id": case_id, "study_uid": study_uid, "series": series}
    (staging / LINKAGE_FILE).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def read_linkage(root: Path, case_id: str) -> CaseLinkage:
    """The linkage of ``case_id``; a one-line FedsegError when the site kept none."""
    folder = Path(root) / case_id
    path = folder / LINKAGE_FILE
    if not path.is_file():
        raise FedsegError(
            f"case {case_id} has no linkage in {root} (intaken before fedseg kept one, without "
            "`linkage:` in the mapping YAML, or with another one): rerun `fedseg intake dicom` "
            "on its DICOM folder with that mapping YAML"
        )
    try:
        data = json.loads(path.read_text())
        series = {
            m: SourceSeries(
                s["series_uid"],
                s["number"],
                s["description"],
                np.asarray(s["affine"], dtype=np.float64),
                tuple(int(v) for v in s["shape"]),  # type: ignore[arg-type]
                tuple(s["instance_uids"]),
            )
            for m, s in data["series"].items()
        }
        return CaseLinkage(data["case_id"], data["study_uid"], series, folder)
    except (ValueError, KeyError, TypeError) as exc:
        raise FedsegError(
            f"{path}: damaged linkage ({exc.__class__.__name__}); rerun `fedseg intake dicom`"
        ) from None
