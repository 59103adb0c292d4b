"""Series mapping rules and config files: defaults, overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.errors import FedsegError
from fedseg.intake.config import (
    SALT_ENV,
    MappingConfig,
    PreprocessConfig,
    load_mapping,
    load_pacs_config,
)
from fedseg.intake.series_classifier import description_matches

DEFAULTS = MappingConfig()


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("T1 AX", ["t1"]),
        ("AX_T1_SE", ["t1"]),
        ("t1_mprage_sag", ["t1"]),
        ("MPRAGE", ["t1"]),
        ("T1 POST GD", ["t1ce"]),
        ("AX T1 +C", ["t1ce"]),
        ("T1W_CE", ["t1ce"]),
        ("MPRAGE+C", ["t1ce"]),
        ("post gad T1 3D", ["t1ce"]),
        ("T2 AX", ["t2"]),
        ("t2_tse_tra", ["t2"]),
        ("FLAIR AX", ["flair"]),
        ("T2 FLAIR", ["flair"]),
        ("T2* GRE", []),
        ("LOCALIZER", []),
        ("DWI b1000", []),
        ("T12 something", []),
        # issue 18: vendor naming and fixes of the earlier rules
        ("t2_tirm_tra_dark-fluid", ["flair"]),  # was t2: Siemens names FLAIR "dark fluid"
        ("Ax T1 FLAIR", ["t1"]),  # was unmatched: T1-FLAIR is T1-weighted
        ("T1 pre-contrast", ["t1"]),  # was t1ce: "contrast" after "pre" is no contrast
        ("T1 POSTERIOR FOSSA", ["t1"]),  # was t1ce: "post" of "posterior"
        ("sT1W_3D_TFE", ["t1"]),  # was unmatched: Philips' SENSE prefix
        ("Sag 3D BRAVO", ["t1"]),  # was unmatched: GE's 3D T1
        ("t1_mprage_tra_KM", ["t1ce"]),  # was t1: German "Kontrastmittel"
        ("AX T1 C+", ["t1ce"]),  # was t1
        ("3D_Brain_VIEW_FLAIR", ["flair"]),
    ],
)
def test_default_rules(description: str, expected: list[str]) -> None:
    assert description_matches(description, DEFAULTS) == expected


def test_mapping_file_overrides_one_rule(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("salt: s3cret\nrules:\n  flair:\n    include: 'dark ?fluid'\n")
    cfg = load_mapping(path)
    assert description_matches("DARK FLUID AX", cfg) == ["flair"]
    assert description_matches("FLAIR AX", cfg) == []
    assert description_matches("T1 AX", cfg) == ["t1"]  # other defaults kept
    assert cfg.resolved_salt() == "s3cret"


def test_bad_mapping_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("rules:\n  t1:\n    include: '(unclosed'\n")
    with pytest.raises(FedsegError, match=r"rules.t1.include.*invalid regex") as err:
        load_mapping(path)
    assert "\n" not in str(err.value)
    path.write_text("colour: blue\n")
    with pytest.raises(FedsegError, match="colour"):
        load_mapping(path)
    with pytest.raises(FedsegError, match="not found"):
        load_mapping(tmp_path / "missing.yaml")


def test_salt_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    with pytest.raises(FedsegError, match="no pseudonym salt"):
        MappingConfig().resolved_salt()
    monkeypatch.setenv(SALT_ENV, "from-env")
    assert MappingConfig().resolved_salt() == "from-env"


def test_pacs_config(tmp_path: Path) -> None:
    path = tmp_path / "pacs.yaml"
    path.write_text("calling_ae: SITE1\npeer: {host: pacs.local, port: 104, ae_title: PACS}\n")
    cfg = load_pacs_config(path)
    assert (cfg.peer.port, cfg.retrieve, cfg.tls) == (104, "move", None)
    path.write_text("peer: {host: pacs.local, port: 104, ae_title: A_TITLE_FAR_TOO_LONG}\n")
    with pytest.raises(FedsegError, match=r"peer.ae_title"):
        load_pacs_config(path)


def test_preprocess_levels_must_match() -> None:
    with pytest.raises(ValueError, match="one value per shrink factor"):
        PreprocessConfig(shrink_factors=(4, 2, 1), smoothing_sigmas=(1.0,))
