"""Series classification by description and acquisition parameters: the three major vendors'
naming, parameter-only series, conflicts, what is left out and why, and `intake classify`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.errors import FedsegError
from fedseg.intake.config import MappingConfig, ParameterRules, SeriesRule, load_mapping
from fedseg.intake.deidentify import pseudonym
from fedseg.intake.dicom_series import Series, Study, read_acquisition, scan_dicom
from fedseg.intake.dicom_to_nifti import convert_dicom
from fedseg.intake.series_classifier import (
    BOTH,
    DESCRIPTION,
    PARAMETERS,
    classify_series,
    classify_study,
)
from tests.helpers import run_fedseg
from tests.intake.intake_synth import blob_volume, write_series

_register()
SALT = MappingConfig(salt="site-secret")

# Typical standard-tag values as each vendor writes them (times in ms).
GD = {"ContrastBolusAgent": "Gadovist"}
MPRAGE = {  # Siemens 3T MPRAGE
    "ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"],
    "ScanOptions": "IR", "MRAcquisitionType": "3D", "RepetitionTime": 2300,
    "EchoTime": 2.32, "InversionTime": 900, "FlipAngle": 8, "SequenceName": "*tfl3d1_16ns",
}  # fmt: skip
SIEMENS_T1_SE = {
    "ScanningSequence": "SE", "SequenceVariant": ["SK", "SP"], "MRAcquisitionType": "2D",
    "RepetitionTime": 550, "EchoTime": 8.9, "FlipAngle": 90,
}  # fmt: skip
VIBE = {
    "ScanningSequence": "GR", "SequenceVariant": ["SP", "SS"], "ScanOptions": ["PFP", "FS"],
    "MRAcquisitionType": "3D", "RepetitionTime": 5.4, "EchoTime": 2.46, "FlipAngle": 10,
}  # fmt: skip
TSE = {
    "ScanningSequence": "SE", "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": "PFP",
    "MRAcquisitionType": "2D", "RepetitionTime": 6000, "EchoTime": 99, "FlipAngle": 150,
}  # fmt: skip
TIRM = {  # Siemens 2D dark fluid
    "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP", "OSP"],
    "ScanOptions": "IR", "MRAcquisitionType": "2D", "RepetitionTime": 9000, "EchoTime": 81,
    "InversionTime": 2500, "FlipAngle": 150,
}  # fmt: skip
SPACE_FLAIR = {
    "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"],
    "ScanOptions": ["IR", "PFP"], "MRAcquisitionType": "3D", "RepetitionTime": 5000,
    "EchoTime": 387, "InversionTime": 1800, "FlipAngle": 120,
}  # fmt: skip
GE_T1_FSE = {
    "ScanningSequence": "SE", "SequenceVariant": ["SK", "OSP"],
    "ScanOptions": ["FAST_GEMS", "FILTERED_GEMS"], "MRAcquisitionType": "2D",
    "RepetitionTime": 600, "EchoTime": 10.5, "FlipAngle": 90,
}  # fmt: skip
BRAVO = {  # GE reports the readout TR; the inversion shows in ScanOptions and TI
    "ScanningSequence": "GR", "SequenceVariant": ["SS", "SK"],
    "ScanOptions": ["FAST_GEMS", "EDR_GEMS", "IR_GEMS"], "MRAcquisitionType": "3D",
    "RepetitionTime": 8.2, "EchoTime": 3.2, "InversionTime": 450, "FlipAngle": 12,
}  # fmt: skip
FSPGR = {
    "ScanningSequence": "GR", "SequenceVariant": ["SS", "SK"], "MRAcquisitionType": "3D",
    "RepetitionTime": 7.0, "EchoTime": 2.8, "FlipAngle": 15,
}  # fmt: skip
GE_T1_FLAIR = {
    "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "OSP"],
    "ScanOptions": ["FAST_GEMS", "IR_GEMS"], "MRAcquisitionType": "2D",
    "RepetitionTime": 2000, "EchoTime": 9, "InversionTime": 860,
}  # fmt: skip
FRFSE = {
    "ScanningSequence": "SE", "SequenceVariant": ["SK", "OSP"], "ScanOptions": "FAST_GEMS",
    "MRAcquisitionType": "2D", "RepetitionTime": 5000, "EchoTime": 102,
}  # fmt: skip
GE_FLAIR = {
    "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "OSP"],
    "ScanOptions": ["FAST_GEMS", "IR_GEMS"], "MRAcquisitionType": "2D",
    "RepetitionTime": 9000, "EchoTime": 120, "InversionTime": 2250,
}  # fmt: skip
CUBE_FLAIR = {
    "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SS"], "MRAcquisitionType": "3D",
    "RepetitionTime": 6000, "EchoTime": 130, "InversionTime": 1800,
}  # fmt: skip
TFE = {  # Philips 3D TFE: no InversionTime in the standard tags
    "ScanningSequence": "GR", "SequenceVariant": "MP", "MRAcquisitionType": "3D",
    "RepetitionTime": 8.1, "EchoTime": 3.7, "FlipAngle": 8,
}  # fmt: skip
PHILIPS_T1_SE = {
    "ScanningSequence": "SE", "SequenceVariant": "SK", "MRAcquisitionType": "2D",
    "RepetitionTime": 500, "EchoTime": 10,
}  # fmt: skip
PHILIPS_T2_TSE = {
    "ScanningSequence": "SE", "SequenceVariant": "SK", "MRAcquisitionType": "2D",
    "RepetitionTime": 3000, "EchoTime": 80,
}  # fmt: skip
PHILIPS_FLAIR = {
    "ScanningSequence": "IR", "SequenceVariant": "SK", "MRAcquisitionType": "2D",
    "RepetitionTime": 11000, "EchoTime": 125, "InversionTime": 2800,
}  # fmt: skip
VIEW_FLAIR = {
    "ScanningSequence": ["SE", "IR"], "SequenceVariant": "SK", "MRAcquisitionType": "3D",
    "RepetitionTime": 4800, "EchoTime": 340, "InversionTime": 1650,
}  # fmt: skip
LOCALIZER = {"ScanningSequence": "GR", "RepetitionTime": 8.6, "EchoTime": 4.0}
DWI = {"ScanningSequence": "EP", "SequenceVariant": ["SK", "SP"], "RepetitionTime": 5000,
       "EchoTime": 90}  # fmt: skip


def series(description: str, tags: dict[str, object], number: int = 1) -> Series:
    """A series whose first header holds ``tags`` (read as ``scan_dicom`` reads them)."""
    ds = Dataset()
    for key, value in tags.items():
        setattr(ds, key, value)
    return Series(
        "1.2.3", generate_uid(), number, "MR", description, acquisition=read_acquisition(ds)
    )


VENDOR_NAMING = [
    # Siemens
    ("t1_mprage_sag_p2_iso", MPRAGE, "t1", BOTH),
    ("t1_mprage_sag_p2_iso_KM", MPRAGE | GD, "t1ce", BOTH),
    ("t1_se_tra", SIEMENS_T1_SE, "t1", BOTH),
    ("t1_se_tra_Gd", SIEMENS_T1_SE | GD, "t1ce", BOTH),
    ("t1_vibe_fs_tra_post", VIBE | GD, "t1ce", BOTH),
    ("t1_tirm_tra", GE_T1_FLAIR, "t1", BOTH),
    ("t2_tse_tra", TSE, "t2", BOTH),
    ("t2_tirm_tra_dark-fluid", TIRM, "flair", BOTH),
    ("t2_space_dark-fluid_sag_p2_iso", SPACE_FLAIR, "flair", BOTH),
    # GE
    ("Ax T1 FSE", GE_T1_FSE, "t1", BOTH),
    ("Sag 3D BRAVO", BRAVO, "t1", BOTH),
    ("Ax BRAVO +C", BRAVO | GD, "t1ce", BOTH),
    ("Ax T1 FSE POST", GE_T1_FSE, "t1ce", BOTH),
    ("AX T1 C+", GE_T1_FSE, "t1ce", BOTH),
    ("3D FSPGR +C", FSPGR, "t1ce", BOTH),
    ("Ax T1 FLAIR", GE_T1_FLAIR, "t1", BOTH),
    ("Sag T1 FLAIR +C", GE_T1_FLAIR, "t1ce", BOTH),
    ("Ax T2 FRFSE", FRFSE, "t2", BOTH),
    ("AX T2 PROPELLER", FRFSE, "t2", BOTH),
    ("Ax T2 FLAIR", GE_FLAIR, "flair", BOTH),
    ("AX T2 FLAIR ASSET", GE_FLAIR, "flair", BOTH),  # ASSET: GE parallel imaging, not a cal scan
    ("Sag CUBE FLAIR", CUBE_FLAIR, "flair", BOTH),
    # Philips
    ("T1W_3D_TFE", TFE, "t1", BOTH),
    ("sT1W_3D_TFE", TFE, "t1", BOTH),
    ("T1W_3D_TFE_Gd", TFE, "t1ce", BOTH),
    ("T1W_SE +C", PHILIPS_T1_SE | {"ContrastBolusVolume": 7.5}, "t1ce", BOTH),
    ("T2W_TSE", PHILIPS_T2_TSE, "t2", BOTH),
    ("T2W_FLAIR", PHILIPS_FLAIR, "flair", BOTH),
    ("3D_Brain_VIEW_FLAIR", VIEW_FLAIR, "flair", BOTH),
    # site conventions, descriptions alone
    ("T1 PRE", {}, "t1", DESCRIPTION),
    ("PRE-CONTRAST T1", {}, "t1", DESCRIPTION),
    ("T1 POSTOP", {}, "t1", DESCRIPTION),
    ("T1 POST GAD", {}, "t1ce", DESCRIPTION),
    ("T1c", {}, "t1ce", DESCRIPTION),
    ("T1+C", {}, "t1ce", DESCRIPTION),
    ("T1 W/ C", {}, "t1ce", DESCRIPTION),
    ("FLAIR 3D", {}, "flair", DESCRIPTION),
    ("DARK FLUID AX", {}, "flair", DESCRIPTION),
    ("T2 AXIAL", {}, "t2", DESCRIPTION),
    ("T1 AX", GD, "t1ce", DESCRIPTION),  # contrast agent tag, no parameters
    # parameters alone: empty descriptions
    ("", MPRAGE, "t1", PARAMETERS),
    ("", MPRAGE | GD, "t1ce", PARAMETERS),
    ("", BRAVO, "t1", PARAMETERS),
    ("", TFE, "t1", PARAMETERS),
    ("", GE_T1_FLAIR, "t1", PARAMETERS),
    ("", SIEMENS_T1_SE | {"ContrastBolusIngredient": "GADOLINIUM"}, "t1ce", PARAMETERS),
    ("", TSE, "t2", PARAMETERS),
    ("", PHILIPS_T2_TSE, "t2", PARAMETERS),
    ("", TIRM, "flair", PARAMETERS),
    ("", PHILIPS_FLAIR, "flair", PARAMETERS),
    ("", VIEW_FLAIR, "flair", PARAMETERS),
    ("", CUBE_FLAIR, "flair", PARAMETERS),
    # the parameters decide the weighting against a description; the description the contrast
    ("T2 AX", TIRM, "flair", PARAMETERS),
    ("Ax +C", BRAVO, "t1ce", PARAMETERS),
    ("T1 PRE", SIEMENS_T1_SE | GD, "t1", BOTH),  # "pre" beats the agent tag
]


@pytest.mark.parametrize(("description", "tags", "expected", "source"), VENDOR_NAMING)
def test_vendor_naming_and_parameters(
    description: str, tags: dict[str, object], expected: str, source: str
) -> None:
    verdict = classify_series(series(description, tags), SALT)
    assert (verdict.taken_as, verdict.source) == (expected, source), verdict.reason


def test_reasons_name_rules_and_values() -> None:
    dark = classify_series(series("", TIRM), SALT)
    assert "TI 2500 ms" in dark.reason and "TR 9000 ms" in dark.reason and "TE 81 ms" in dark.reason
    assert "fluid-attenuated" in dark.reason
    overruled = classify_series(series("T2 AX", TIRM), SALT)
    assert "overrules description rule t2" in overruled.reason
    agent = classify_series(series("", MPRAGE | GD), SALT)
    assert "contrast agent tag (Gadovist)" in agent.reason
    both = classify_series(series("t2_tse_tra", TSE), SALT)
    assert both.reason.startswith("rule t2; ") and "T2-weighted" in both.reason
    tagged = classify_series(series("T1 AX", SIEMENS_T1_SE | GD), SALT)
    assert (tagged.taken_as, tagged.source) == ("t1ce", BOTH)
    assert tagged.reason.startswith("rule t1; ") and tagged.reason.endswith("(Gadovist)")
    words = classify_series(series("T1 POST GAD", {}), SALT)
    assert words.reason == "rule t1ce; parameters do not decide: no RepetitionTime or EchoTime"


@pytest.mark.parametrize(
    ("description", "tags", "source", "why"),
    [
        ("localizer", LOCALIZER, "ignored", "ignore"),  # T1-like parameters, still left out
        ("AAHead_Scout_64ch-head-coil", LOCALIZER, "ignored", "ignore"),
        ("3 Plane Loc", LOCALIZER, "ignored", "ignore"),
        ("ASSET Calibration", LOCALIZER, "ignored", "ignore"),
        ("SURVEY", LOCALIZER, "ignored", "ignore"),
        ("t2_spc_DIR_sag_p2_iso", SPACE_FLAIR | {"InversionTime": 3400}, "ignored", "ignore"),
        ("ep2d_diff_tra", DWI, "ignored", "ignore"),
        ("Ax DWI", DWI, "ignored", "ignore"),
        ("t2_swi_tra", {}, "ignored", "ignore"),
        ("Ax SWAN", {}, "ignored", "ignore"),
        ("", DWI, "undecided", "echo-planar"),
        ("", LOCALIZER | {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "ignored",
         "LOCALIZER"),
        ("", TSE | {"ImageType": ["DERIVED", "PRIMARY", "ADC"]}, "ignored", "ADC"),
        ("T2* GRE", {"ScanningSequence": "GR", "RepetitionTime": 650, "EchoTime": 20}, "undecided",
         "neither T1, T2 nor FLAIR"),
        ("", {"ScanningSequence": "SE", "RepetitionTime": 3000, "EchoTime": 15}, "undecided",
         "neither T1, T2 nor FLAIR"),  # proton density
        ("", {"ScanningSequence": ["SE", "IR"], "RepetitionTime": 4000, "EchoTime": 60,
              "InversionTime": 160}, "undecided",
         "TI 160 ms, TR 4000 ms, TE 60 ms) is neither FLAIR nor T1"),  # STIR
        ("", {"ScanningSequence": ["SE", "IR"], "RepetitionTime": 9000, "EchoTime": 90},
         "undecided", "without InversionTime"),
        ("", {"RepetitionTime": 6000, "EchoTime": 100}, "undecided", "no ScanningSequence"),
        ("", {}, "undecided", "no RepetitionTime or EchoTime"),
        ("TFE T2", {}, "ambiguous", "no RepetitionTime"),
    ],
)  # fmt: skip
def test_left_out_with_reason(
    description: str, tags: dict[str, object], source: str, why: str
) -> None:
    verdict = classify_series(series(description, tags), SALT)
    assert verdict.taken_as is None
    assert verdict.source == source and why in verdict.reason, verdict.reason
    assert verdict.note().startswith(f"skipped series 1 '{description}': ")


def test_use_parameters_off_leaves_descriptions_alone() -> None:
    off = MappingConfig(use_parameters=False)
    assert classify_series(series("", TIRM), off).taken_as is None
    assert classify_series(series("T2 AX", TIRM), off).taken_as == "t2"
    ambiguous = classify_series(series("TFE T2", TIRM), off)
    assert (ambiguous.source, ambiguous.candidates) == ("ambiguous", ("t1", "t2"))
    assert classify_series(series("TFE T2", TIRM), SALT).taken_as == "flair"


def test_thresholds_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("parameters:\n  flair_min_ti_ms: 2600\n")
    cfg = load_mapping(path)
    assert cfg.parameters.flair_min_ti_ms == 2600 and cfg.parameters.long_te_ms == 60
    assert classify_series(series("", TIRM), cfg).taken_as is None  # TI 2500 < 2600
    assert classify_series(series("", PHILIPS_FLAIR), cfg).taken_as == "flair"
    path.write_text("parameters:\n  t1_max_ti_ms: 1600\n")
    with pytest.raises(FedsegError, match="t1_max_ti_ms must be below flair_min_ti_ms"):
        load_mapping(path)
    path.write_text("parameters:\n  flair_min_ti: 2600\n")
    with pytest.raises(FedsegError, match="flair_min_ti"):
        load_mapping(path)
    with pytest.raises(ValueError, match="above t1_min_ti_ms"):
        ParameterRules(t1_min_ti_ms=500, t1_max_ti_ms=400)


def study(*items: tuple[str, dict[str, object]]) -> Study:
    return Study("1.2.3", [series(d, t, number=i + 2) for i, (d, t) in enumerate(items)])


def test_study_prefers_original_then_3d() -> None:
    mpr = MPRAGE | GD | {"ImageType": ["DERIVED", "SECONDARY", "MPR"]}
    verdict = classify_study(
        study(
            ("t1_mprage_sag_p2_iso", MPRAGE),
            ("t1_mprage_sag_p2_iso_KM", MPRAGE | GD),
            ("t1_mprage_sag_p2_iso_KM_MPR_tra", mpr),
            ("Ax T1 FSE +C", GE_T1_FSE),
            ("t2_tse_tra", TSE),
            ("t2_tirm_tra_dark-fluid", TIRM),
        ),
        SALT,
    )
    assert verdict.complete
    assert verdict.chosen["t1ce"].description == "t1_mprage_sag_p2_iso_KM"
    (note,) = [n for n in verdict.notes if n.startswith("t1ce:")]
    assert "took series 3 't1_mprage_sag_p2_iso_KM' (original 3D acquisition)" in note
    assert "series 4 't1_mprage_sag_p2_iso_KM_MPR_tra'" in note and "series 5" in note
    off = classify_study(
        study(("Ax T1 FSE +C", GE_T1_FSE), ("Ax BRAVO +C", BRAVO), ("T1", {}), ("T2", {}),
              ("FLAIR", {})),
        MappingConfig(prefer_original_3d=False),
    )  # fmt: skip
    assert not off.complete
    assert any(n.startswith("ambiguous mapping: 2 series match t1ce") for n in off.notes)


def test_truly_ambiguous_study_names_the_candidates() -> None:
    verdict = classify_study(
        study(("", MPRAGE), ("", MPRAGE | GD), ("", TSE), ("", TSE), ("", TIRM)), SALT
    )
    assert not verdict.complete and set(verdict.chosen) == {"t1", "t1ce", "flair"}
    (note,) = verdict.notes
    assert note.startswith("ambiguous mapping: 2 series match t2 (series 4 '' [parameters:")
    assert "series 5 '' [parameters: no inversion, long TR and TE (2D SE, TR 6000 ms" in note
    assert note.endswith("neither descriptions nor parameters tell them apart")
    combo = classify_study(study(("T1", {}), ("T1 +C", {}), ("TFE T2", {}), ("FLAIR", {})), SALT)
    assert "missing sequence t2 (series 4 'TFE T2' could be)" in combo.notes
    assert any("'TFE T2': ambiguous mapping (t1, t2)" in n for n in combo.notes)


# ----------------------------------------------------------------------- DICOM on disk

SHAPE = (16, 16, 6)
ISSUE_STUDY = [  # Siemens naming, as in issue 18: no word "flair" anywhere
    ("t1_mprage_sag_p2_iso", MPRAGE),
    ("t1_mprage_sag_p2_iso_KM", MPRAGE | GD),
    ("t2_tse_tra", TSE),
    ("t2_tirm_tra_dark-fluid", TIRM),
    ("localizer", LOCALIZER),
    ("ep2d_diff_tra", DWI),
]
#: The description rules before issue 18 for T2 and FLAIR: "t2_tirm_tra_dark-fluid" is T2.
OLD_RULES = {
    **MappingConfig().rules,
    "t2": SeriesRule(include=r"(?<![a-z0-9])t2(?![0-9])", exclude=r"flair|star|\*"),
    "flair": SeriesRule(include=r"flair", exclude=r"(?<![a-z0-9])t1(?![0-9])"),
}


def write_dicom_study(folder: Path, items: list[tuple[str, dict[str, object]]]) -> str:
    uid = generate_uid()
    for i, (description, tags) in enumerate(items):
        write_series(
            folder / f"s{i}",
            blob_volume(SHAPE, i, 100.0 * (i + 1)),
            study_uid=uid,
            description=description,
            number=i + 2,
            tags=tags,
        )
    return uid


def test_dark_fluid_study_is_converted(tmp_path: Path) -> None:
    uid = write_dicom_study(tmp_path / "dicom", ISSUE_STUDY)
    case_id = pseudonym(uid, "site-secret")
    old = MappingConfig(salt="site-secret", rules=OLD_RULES, use_parameters=False)
    before = convert_dicom(tmp_path / "dicom", tmp_path / "before", old)
    (skipped,) = before.outcomes
    assert skipped.status == "skipped"
    assert any(n.startswith("ambiguous mapping: 2 series match t2") for n in skipped.notes)
    for name, mapping in (("out", SALT), ("old", old.model_copy(update={"use_parameters": True}))):
        report = convert_dicom(tmp_path / "dicom", tmp_path / name, mapping)
        assert report.converted == [case_id], report.lines()
    log = (tmp_path / "out" / "intake_dicom.log").read_text()
    assert "'localizer': no mapping rule matches" in log and "'ep2d_diff_tra'" in log


def test_classify_command(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    write_dicom_study(dicom / "a", ISSUE_STUDY)
    write_dicom_study(
        dicom / "b", [("", MPRAGE), ("", MPRAGE | GD), ("", TSE), ("", TSE), ("", TIRM)]
    )
    files = sorted(p for p in tmp_path.rglob("*"))
    proc = run_fedseg("intake", "classify", dicom, env={"FEDSEG_INTAKE_SALT": ""})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "study 1: " in out and "study 2: " in out
    assert "t2_tirm_tra_dark-fluid" in out and "fluid-attenuated" in out and "TI 2500 ms" in out
    assert "ambiguous mapping: 2 series match t2" in out
    assert "1 of 2 studies complete" in out and "nothing written" in out
    assert "set the salt" in out
    assert sorted(p for p in tmp_path.rglob("*")) == files  # a dry run

    result = CliRunner().invoke(
        app, ["intake", "classify", str(dicom), "--json"], env={"FEDSEG_INTAKE_SALT": "s"}
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by_status = {s["status"]: s for s in data["studies"]}
    assert set(by_status) == {"complete", "skipped"}
    assert all(s["study"].startswith("case_") for s in data["studies"])  # pseudonyms, no UIDs
    rows = {r["description"]: r for r in by_status["complete"]["series"] if r["description"]}
    dark = rows["t2_tirm_tra_dark-fluid"]
    assert (dark["taken_as"], dark["used_as"], dark["source"]) == ("flair", "flair", BOTH)
    assert dark["parameters"]["InversionTime"] == 2500
    assert dark["parameters"]["ScanningSequence"] == "SE\\IR"
    assert rows["localizer"]["source"] == "ignored" and rows["localizer"]["taken_as"] is None
    tied = [r for r in by_status["skipped"]["series"] if r["taken_as"] == "t2"]
    assert len(tied) == 2 and all(r["used_as"] is None for r in tied)
    assert "1.2.826" not in result.output  # no UID (pydicom's generate_uid prefix)


def test_classify_bad_input_is_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["intake", "classify", str(tmp_path / "nope")])
    assert isinstance(missing.exception, FedsegError) and "not a folder" in str(missing.exception)
    (tmp_path / "notes.txt").write_text("not dicom")
    empty = CliRunner().invoke(app, ["intake", "classify", str(tmp_path)])
    assert isinstance(empty.exception, FedsegError)
    assert "no DICOM instances found (searched 1 files)" in str(empty.exception)
    proc = run_fedseg("intake", "classify", tmp_path / "nope")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def enhanced(tr: float, te: float, ti: float | None, pulse: str, **top: object) -> dict:
    """Enhanced MR header: timing in functional groups, pulse sequence at the top level."""
    timing, echo, modifier = Dataset(), Dataset(), Dataset()
    timing.RepetitionTime, timing.FlipAngle = tr, 90
    echo.EffectiveEchoTime = te
    modifier.InversionRecovery = "YES" if ti else "NO"
    if ti:
        modifier.InversionTimes = [ti]
    shared = Dataset()
    shared.MRTimingAndRelatedParametersSequence = [timing]
    shared.MRModifierSequence = [modifier]
    frame = Dataset()
    frame.MREchoSequence = [echo]
    return {
        "SharedFunctionalGroupsSequence": [shared],
        "PerFrameFunctionalGroupsSequence": [frame],
        "EchoPulseSequence": pulse,
        "MRAcquisitionType": "3D",
        **top,
    }


def test_enhanced_mr_headers(tmp_path: Path) -> None:
    flair = series("", enhanced(4800, 340, 1650, "SPIN"))
    assert flair.acquisition.scanning_sequence == ("SE", "IR")
    assert (flair.acquisition.repetition_time, flair.acquisition.echo_time) == (4800, 340)
    assert classify_series(flair, SALT).taken_as == "flair"
    agent = Dataset()
    agent.CodeValue, agent.CodeMeaning = "C-17800", "Gadolinium"
    t1ce = series("", enhanced(8.1, 3.7, None, "GRADIENT", ContrastBolusAgentSequence=[agent]))
    verdict = classify_series(t1ce, SALT)
    assert verdict.taken_as == "t1ce" and "Gadolinium" in verdict.reason
    assert classify_series(series("", enhanced(5000, 100, None, "SPIN")), SALT).taken_as == "t2"
    # The scanner's own label decides where the times cannot; diffusion is left out.
    stated = series("", {"AcquisitionContrast": "FLUID_ATTENUATED"})
    assert classify_series(stated, SALT).taken_as == "flair"
    assert "AcquisitionContrast FLUID_ATTENUATED" in classify_series(stated, SALT).reason
    diffusion = classify_series(series("", {"AcquisitionContrast": "DIFFUSION"}), SALT)
    assert diffusion.source == "ignored"
    # scan_dicom reads the same places from files.
    write_series(
        tmp_path / "e",
        blob_volume(SHAPE, 0, 100.0),
        study_uid=generate_uid(),
        description="",
        number=3,
        tags=enhanced(9000, 120, 2250, "SPIN"),
    )
    (scanned,) = scan_dicom(tmp_path).studies[0].series
    assert scanned.acquisition.inversion_time == 2250
    assert classify_series(scanned, SALT).taken_as == "flair"
