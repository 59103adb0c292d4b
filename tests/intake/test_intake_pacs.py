"""`fedseg intake pacs` against a real Orthanc: echo, find, retrieve (C-GET and C-MOVE),
store (C-STORE, over TLS too), then conversion; patient data must not reach any output name
or NIfTI header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.data.cases import discover_cases, load_case
from fedseg.errors import FedsegError
from fedseg.intake.config import load_pacs_config
from fedseg.intake.pacs import StudyQuery, echo, find, retrieve, store
from tests.intake.conftest import Orthanc, make_pki, start_orthanc, stop_orthanc
from tests.intake.intake_synth import (
    PATIENT,
    assert_phi_free,
    blob_volume,
    write_series,
    write_study,
)

pytestmark = pytest.mark.slow
_register()
runner = CliRunner()


@pytest.fixture
def loaded(orthanc: Orthanc, tmp_path: Path) -> tuple[Orthanc, dict[str, str]]:
    """Orthanc holding two studies of PAT-0001 (2024 and 2022) and one of another patient."""
    uids = {}
    uid, _ = write_study(tmp_path / "s1", seed=1)
    uids["2024"] = uid
    orthanc.upload(sorted((tmp_path / "s1").rglob("*.dcm")))
    other = {**PATIENT, "PatientID": "PAT-0002", "PatientName": "ROE^RICHARD"}
    uid2 = "1.2.826.0.1.3680043.8.498.424242"
    write_series(
        tmp_path / "s2",
        blob_volume((20, 20, 6), 5, 100.0),
        study_uid=uid2,
        description="T2 AX",
        number=3,
        patient=other,
    )
    orthanc.upload(sorted((tmp_path / "s2").rglob("*.dcm")))
    uids["other"] = uid2
    return orthanc, uids


def test_echo_ok_refused_and_unreachable(orthanc: Orthanc, tmp_path: Path) -> None:
    cfg = load_pacs_config(orthanc.pacs_yaml(tmp_path / "pacs.yaml"))
    assert echo(cfg) > 0
    result = runner.invoke(app, ["intake", "pacs", "echo", "--config", str(tmp_path / "pacs.yaml")])
    assert result.exit_code == 0 and "C-ECHO ok" in result.output
    bad_ae = orthanc.pacs_yaml(
        tmp_path / "bad.yaml",
        peer={"host": "127.0.0.1", "port": orthanc.dicom_port, "ae_title": "WRONG"},
    )
    # Orthanc rejects an unknown called AE, or (seen under load) aborts: both name the AE.
    with pytest.raises(FedsegError, match=r"(refused|aborted) the association.*AE title"):
        echo(load_pacs_config(bad_ae))
    closed = orthanc.pacs_yaml(
        tmp_path / "closed.yaml",
        peer={"host": "127.0.0.1", "port": orthanc.move_port, "ae_title": "X"},
        timeout_s=3,
    )
    with pytest.raises(FedsegError, match="cannot reach"):
        echo(load_pacs_config(closed))


def test_find_by_patient_date_modality_and_series(
    loaded: tuple[Orthanc, dict[str, str]], tmp_path: Path
) -> None:
    orthanc, uids = loaded
    cfg = load_pacs_config(orthanc.pacs_yaml(tmp_path / "pacs.yaml"))
    assert {s.study_uid for s in find(cfg, StudyQuery())} == set(uids.values())
    mine = find(cfg, StudyQuery(patient_id="PAT-0001"))
    assert [s.study_uid for s in mine] == [uids["2024"]]
    assert find(cfg, StudyQuery(patient_id="PAT-0001", study_date="20240101-20241231"))
    assert not find(cfg, StudyQuery(patient_id="PAT-0001", study_date="20250101-"))
    flair = find(cfg, StudyQuery(series_description="*FLAIR*"))
    assert [s.study_uid for s in flair] == [uids["2024"]]
    assert [x.description for x in flair[0].series] == ["FLAIR AX"]
    ct = find(cfg, StudyQuery(modality="CT"))
    assert [s.study_uid for s in ct] == [uids["2024"]]
    config = str(tmp_path / "pacs.yaml")
    listed = runner.invoke(
        app, ["intake", "pacs", "find", "--config", config, "--series-description", "*FLAIR*"]
    )
    assert listed.exit_code == 0, listed.output
    assert "FLAIR AX" in listed.output and "1 study found" in listed.output
    bad_date = runner.invoke(app, ["intake", "pacs", "find", "--config", config, "--date", "2024"])
    assert bad_date.exit_code != 0 and "YYYYMMDD" in str(bad_date.exception)
    no_query = runner.invoke(
        app, ["intake", "pacs", "retrieve", "--config", config, "--out", str(tmp_path / "x")]
    )
    assert no_query.exit_code != 0 and "needs a query" in str(no_query.exception)


@pytest.mark.parametrize("method", ["get", "move"])
def test_retrieve_then_convert(
    loaded: tuple[Orthanc, dict[str, str]], tmp_path: Path, method: str
) -> None:
    orthanc, uids = loaded
    config = orthanc.pacs_yaml(tmp_path / "pacs.yaml", retrieve=method)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("salt: test-site-secret\n")
    result = runner.invoke(
        app,
        [
            "intake",
            "pacs",
            "retrieve",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "dcm"),
            "--patient-id",
            "PAT-0001",
            "--convert",
            str(tmp_path / "nifti"),
            "--mapping",
            str(mapping),
        ],
    )
    assert result.exit_code == 0, result.output
    n_files = len(list((tmp_path / "dcm").rglob("*.dcm")))
    assert n_files == 4 * 20 + 20 + 3  # four MR series, a CT and a 3-slice localizer
    cases = discover_cases(tmp_path / "nifti")
    assert len(cases) == 1
    vols = load_case(cases[0])
    assert vols.image.shape == (4, 40, 36, 20)
    assert np.allclose(vols.spacing, [2.0, 2.0, 3.0])
    assert_phi_free(tmp_path / "nifti", uids["2024"])
    assert uids["2024"] not in cases[0].case_id


def test_tls_echo_find_and_get(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = start_orthanc(
        tmp_path / "orthanc",
        {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki["server.pem"]),
            "DicomTlsPrivateKey": str(pki["server.key"]),
            "DicomTlsTrustedCertificates": str(pki["ca.pem"]),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )
    try:
        uid, _ = write_study(tmp_path / "s1", seed=3, shape=(16, 16, 6), extra=False)
        server.upload(sorted((tmp_path / "s1").rglob("*.dcm")))
        tls = {
            "ca": str(pki["ca.pem"]),
            "cert": str(pki["client.pem"]),
            "key": str(pki["client.key"]),
        }
        cfg = load_pacs_config(server.pacs_yaml(tmp_path / "tls.yaml", tls=tls))
        assert echo(cfg) > 0
        assert [s.study_uid for s in find(cfg, StudyQuery(patient_id="PAT-0001"))] == [uid]
        got = retrieve(cfg, find(cfg, StudyQuery(study_uid=uid)), tmp_path / "dcm")
        assert got.received == 24 and got.failed == 0
        # C-STORE goes over the same TLS association settings (`intake pacs store`).
        extra = write_series(
            tmp_path / "new",
            blob_volume((16, 16, 2), 4, 100.0),
            study_uid=uid,
            description="T2 AX REPEAT",
            number=9,
        )
        assert store(cfg, extra).stored == 2
        assert len(server.rest("GET", "/instances")) == 24 + 2  # type: ignore[arg-type]
        # Without TLS the PACS does not speak to us: a clear one-line error, not a traceback.
        plain = load_pacs_config(server.pacs_yaml(tmp_path / "plain.yaml", timeout_s=5))
        with pytest.raises(FedsegError, match="aborted the association") as err:
            echo(plain)
        print(err.value)
        assert "TLS" in str(err.value) and "\n" not in str(err.value)
    finally:
        stop_orthanc(server)
