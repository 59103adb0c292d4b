"""Pseudonymous case ids and NIfTI headers free of patient-identifying text.

Case ids are ``<prefix>_<12 hex>``: HMAC-SHA256 of the StudyInstanceUID keyed with the
site's salt. The same study always maps to the same id at one site; without the salt the
id cannot be linked back to the study.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib

from fedseg.errors import FedsegError

#: NIfTI-1 header text fields that could carry free text from a source file.
TEXT_FIELDS = ("descrip", "aux_file", "db_name", "intent_name")
#: DICOM keywords whose values must never reach an output name or header.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)
# Shorter values (sex "F", age "034Y") are too short to search for without false alarms.
_MIN_LEN = 4


def pseudonym(study_uid: str, salt: str, prefix: str = "case") -> str:
    """Case id for a study: ``prefix_`` + the first 12 hex digits of HMAC-SHA256(salt, uid)."""
    digest = hmac.new(salt.encode(), study_uid.encode(), hashlib.sha256).hexdigest()
    return f"{prefix}_{digest[:12]}"


def identifier_strings(values: Iterable[object]) -> set[str]:
    """Search strings for DICOM values: whole values and, for person names, each component."""
    out: set[str] = set()
    for value in values:
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            for part in {text, *text.replace("^", " ").split()}:
                if len(part) >= _MIN_LEN:
                    out.add(part)
    return out


def _header_bytes(img: nib.Nifti1Image) -> bytes:
    blocks = [img.header.binaryblock]
    blocks += [ext.get_content() for ext in img.header.extensions]
    return b"".join(b if isinstance(b, bytes) else str(b).encode() for b in blocks)


def ensure_clean(path: Path, identifiers: set[str], digest: str = "") -> None:
    """Clear the free-text header fields of a written NIfTI file (rewriting it only if one was
    set), then check that no identifier occurs in its name, header or header extensions.

    ``digest`` (the hash part of the case id) is left out of the name check: random hex can
    contain a short numeric patient id by chance, and carries no patient data by construction.
    """
    img = nib.load(str(path))
    header = img.header
    if any(bytes(header[f].tobytes()).strip(b"\x00 ") for f in TEXT_FIELDS) or header.extensions:
        data = img.get_fdata(dtype="float32")
        clean = nib.Nifti1Image(data.astype(img.get_data_dtype()), img.affine, header)
        for f in TEXT_FIELDS:
            clean.header[f] = b""
        clean.header.extensions.clear()
        nib.save(clean, str(path))
        img = nib.load(str(path))
    raw = _header_bytes(img).lower()
    name = path.name.lower().replace(digest.lower(), "/") if digest else path.name.lower()
    for ident in identifiers:
        if ident.lower() in name or ident.lower().encode() in raw:
            path.unlink(missing_ok=True)
            raise FedsegError(
                f"{path.name}: a patient-identifying value reached the output; file removed "
                "(report this as a bug, with the DICOM tag that carried it)"
            )
