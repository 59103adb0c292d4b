"""`fedseg intake dicom`: series found and mapped, voxels and geometry kept, pseudonyms,
nothing identifying in outputs, reasons logged for what was skipped, reruns resume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.data.cases import MODALITIES, discover_cases, load_case
from fedseg.errors import FedsegError
from fedseg.intake.config import MappingConfig
from fedseg.intake.deidentify import TEXT_FIELDS, ensure_clean, pseudonym
from fedseg.intake.dicom_to_nifti import convert_dicom
from tests.intake.intake_synth import (
    SERIES,
    assert_phi_free,
    blob_volume,
    write_series,
    write_study,
)

SALT = MappingConfig(salt="site-secret")
_register()


def test_converts_one_study_exactly(tmp_path: Path) -> None:
    study_uid, vols = write_study(tmp_path / "dicom")
    (tmp_path / "dicom" / "README.txt").write_text("not dicom")
    report = convert_dicom(tmp_path / "dicom", tmp_path / "out", SALT)
    case_id = pseudonym(study_uid, "site-secret")
    assert report.converted == [case_id]
    assert report.not_dicom == 1
    (outcome,) = report.outcomes
    assert any("'LOCALIZER': no mapping rule matches" in n for n in outcome.notes)
    assert any("'HEAD CT': modality CT, not MR" in n for n in outcome.notes)
    loaded = load_case(discover_cases(tmp_path / "out")[0])
    for i, m in enumerate(MODALITIES):
        np.testing.assert_array_equal(loaded.image[i], vols[m].astype(np.float32))
    # DICOM LPS (x to patient left) -> NIfTI RAS: the first two axes flip sign.
    np.testing.assert_allclose(np.diag(loaded.affine)[:3], [-2.0, -2.0, 3.0])
    np.testing.assert_allclose(loaded.affine[:3, 3], [40.0, 36.0, -30.0])
    for path in (tmp_path / "out" / case_id).iterdir():
        header = nib.load(path).header
        assert all(header[f].tobytes().strip(b"\0") == b"" for f in TEXT_FIELDS)
    assert_phi_free(tmp_path / "out", study_uid)
    log = (tmp_path / "out" / "intake_dicom.log").read_text()
    assert "converted" in log and "not DICOM" in log
    again = convert_dicom(tmp_path / "dicom", tmp_path / "out", SALT)
    assert [o.status for o in again.outcomes] == ["exists"]


def test_skips_incomplete_and_ambiguous_studies(tmp_path: Path) -> None:
    incomplete = generate_uid()
    for i, m in enumerate(("t1", "t1ce", "t2")):
        write_series(
            tmp_path / "a" / m,
            blob_volume((16, 16, 6), i, 100.0),
            study_uid=incomplete,
            description=SERIES[m],
            number=i,
        )
    ambiguous, _ = write_study(tmp_path / "b", extra=False, shape=(16, 16, 6))
    write_series(
        tmp_path / "b" / "t1again",
        blob_volume((16, 16, 6), 9, 100.0),
        study_uid=ambiguous,
        description="T1 AX REPEAT",
        number=9,
    )
    report = convert_dicom(tmp_path, tmp_path / "out", SALT)
    notes = {o.case_id: (o.status, "; ".join(o.notes)) for o in report.outcomes}
    assert notes[pseudonym(incomplete, "site-secret")] == ("skipped", "missing sequence flair")
    status, why = notes[pseudonym(ambiguous, "site-secret")]
    assert status == "skipped" and "ambiguous mapping: 2 series match t1" in why
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_dir()]


def test_pseudonyms_depend_on_salt() -> None:
    uid = "1.2.3.4.5"
    assert pseudonym(uid, "a") == pseudonym(uid, "a") != pseudonym(uid, "b")
    assert pseudonym(uid, "a").startswith("case_") and uid not in pseudonym(uid, "a")


def test_ensure_clean_clears_text_and_catches_leaks(tmp_path: Path) -> None:
    path = tmp_path / "x.nii.gz"
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header["descrip"] = b"DOE^JANE scanned"
    img.header["aux_file"] = b"PAT-0001"
    nib.save(img, path)
    ensure_clean(path, {"DOE^JANE", "PAT-0001"})
    header = nib.load(path).header
    assert header["descrip"].tobytes().strip(b"\0") == b""
    assert header["aux_file"].tobytes().strip(b"\0") == b""
    leaky = tmp_path / "PAT-0001_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), leaky)
    with pytest.raises(FedsegError, match="patient-identifying"):
        ensure_clean(leaky, {"PAT-0001"})
    assert not leaky.exists()
    # A short numeric patient id inside the random hex of a pseudonym is no leak.
    lucky = tmp_path / "case_0a1234bc99ef_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), lucky)
    ensure_clean(lucky, {"1234"}, digest="0a1234bc99ef")
    assert lucky.exists()


def test_cli_dicom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study_uid, _ = write_study(tmp_path / "dicom", shape=(16, 16, 6), extra=False)
    monkeypatch.delenv("FEDSEG_INTAKE_SALT", raising=False)
    no_salt = CliRunner().invoke(app, ["intake", "dicom", str(tmp_path / "dicom"), "--out", "x"])
    assert no_salt.exit_code != 0 and isinstance(no_salt.exception, FedsegError)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("salt: cli-secret\ncase_prefix: site1\n")
    result = CliRunner().invoke(
        app,
        [
            "intake",
            "dicom",
            str(tmp_path / "dicom"),
            "--out",
            str(tmp_path / "out"),
            "--mapping",
            str(mapping),
        ],
    )
    assert result.exit_code == 0, result.output
    case_id = pseudonym(study_uid, "cli-secret", "site1")
    assert f"{case_id}: converted" in result.output
    assert (tmp_path / "out" / case_id / f"{case_id}_flair.nii.gz").exists()
