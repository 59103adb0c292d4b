"""The site's private linkage and the DICOM SEG made from it: kept only where the mapping
says, the SEG on the source series' grid (directly or through a harmonized case's stored
transform), the real patient's identifiers in the SEG and nowhere else, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.data import nifti
from fedseg.data.cases import discover_cases, load_case
from fedseg.errors import FedsegError
from fedseg.intake.config import PacsConfig, PacsPeer, load_mapping
from fedseg.intake.deidentify import pseudonym
from fedseg.intake.dicom_seg import SEGMENTS, write_seg
from fedseg.intake.dicom_to_nifti import convert_dicom
from fedseg.intake.linkage import REFERENCE, read_linkage
from fedseg.intake.pacs import store
from fedseg.intake.preprocess import SIDE_DIR, SUMMARY_FILE, transform_path
from fedseg.model.identity import model_id
from tests.intake.intake_synth import PATIENT, assert_phi_free, write_study
from tests.model.modelkit import tiny_model

_register()
SHAPE = (40, 36, 20)


def seg_labels(path: Path, linkage_dir: Path, case_id: str) -> np.ndarray:
    """A SEG read back with highdicom as a BraTS 2021 label map (X, Y, Z) on the source
    T1Gd grid, slice k being the k-th linked instance."""
    seg = hd.seg.segread(path)
    uids = read_linkage(linkage_dir, case_id).series[REFERENCE].instance_uids
    numbers = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(uids), combine_segments=True, ignore_spatial_locations=True
    )
    out = np.zeros(numbers.shape, np.uint8)
    for i, (_, value, _, _) in enumerate(SEGMENTS):
        out[numbers == i + 1] = value
    return out.transpose(2, 1, 0)


def tumor(shape: tuple[int, int, int], center: tuple[int, int, int]) -> np.ndarray:
    """A BraTS 2021 label ball: NCR in ET in ED."""
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(shape), center, strict=True)))
    label = np.zeros(shape, np.uint8)
    label[r < 6] = 2
    label[r < 4] = 4
    label[r < 2] = 1
    return label


@pytest.fixture
def intaken(tmp_path: Path) -> tuple[str, Path, Path, Path]:
    """A study converted with a linkage: (study uid, mapping YAML, case folder, linkage)."""
    study_uid, _ = write_study(tmp_path / "dicom", shape=SHAPE)
    mapping = tmp_path / "site" / "mapping.yaml"
    mapping.parent.mkdir()
    mapping.write_text("salt: site-secret\nlinkage: linkage\n")
    report = convert_dicom(tmp_path / "dicom", tmp_path / "nifti", load_mapping(mapping))
    (case_id,) = report.converted
    return study_uid, mapping, tmp_path / "nifti" / case_id, tmp_path / "site" / "linkage"


def test_linkage_is_kept_only_where_the_mapping_says(
    intaken: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    study_uid, mapping, case, linkage_dir = intaken
    case_id = case.name
    linkage = read_linkage(linkage_dir, case_id)
    assert linkage.study_uid == study_uid and set(linkage.series) == {"t1", "t1ce", "t2", "flair"}
    ref = linkage.series[REFERENCE]
    assert ref.shape == SHAPE and len(ref.instance_uids) == SHAPE[2]
    np.testing.assert_allclose(ref.affine, load_case(discover_cases(case)[0]).affine)
    headers = linkage.reference_headers()
    assert str(headers[0].PatientName) == PATIENT["PatientName"] and "PixelData" not in headers[0]
    # The linkage is the one place holding the study's identity; the cases stay clean.
    uids = [u for s in linkage.series.values() for u in (s.series_uid, *s.instance_uids)]
    assert_phi_free(tmp_path / "nifti", study_uid, uids)
    # A case converted before the linkage existed gets it on a rerun, without converting.
    shutil.rmtree(linkage_dir)
    again = convert_dicom(tmp_path / "dicom", tmp_path / "nifti", load_mapping(mapping))
    assert [o.status for o in again.outcomes] == ["exists"]
    assert read_linkage(linkage_dir, case_id).series[REFERENCE].instance_uids == ref.instance_uids
    # Without `linkage:` nothing is kept anywhere (the old behaviour).
    plain = tmp_path / "plain.yaml"
    plain.write_text("salt: site-secret\n")
    convert_dicom(tmp_path / "dicom", tmp_path / "nifti2", load_mapping(plain))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dicom", "site", "nifti", "nifti2", "plain.yaml"]
    )
    with pytest.raises(FedsegError, match="no linkage in") as err:
        read_linkage(tmp_path / "elsewhere", case_id)
    assert "\n" not in str(err.value)
    # A linkage inside the de-identified output (or the DICOM folder) is refused.
    inside = tmp_path / "inside.yaml"
    inside.write_text(f"salt: s\nlinkage: {tmp_path / 'nifti3' / 'private'}\n")
    with pytest.raises(FedsegError, match="inside the output folder"):
        convert_dicom(tmp_path / "dicom", tmp_path / "nifti3", load_mapping(inside))


def test_seg_on_the_source_grid_carries_the_patient(
    intaken: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    study_uid, _, case, linkage_dir = intaken
    linkage = read_linkage(linkage_dir, case.name)
    affine = linkage.series[REFERENCE].affine
    label = tumor(SHAPE, (20, 18, 10))
    out = write_seg(label, affine, case, linkage, "0123abcd", tmp_path / "out" / "seg.dcm")
    np.testing.assert_array_equal(seg_labels(out, linkage_dir, case.name), label)
    ds = pydicom.dcmread(out)
    source = linkage.reference_headers()[0]
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == study_uid
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    refs = ds.ReferencedSeriesSequence
    assert [r.SeriesInstanceUID for r in refs] == [linkage.series[REFERENCE].series_uid]
    for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert str(ds.get(key)) == PATIENT[key], key
    segs = {s.SegmentLabel.split()[0]: s for s in ds.SegmentSequence}
    assert list(segs) == ["NCR", "ED", "ET"]
    assert segs["NCR"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "6574001"
    assert segs["ED"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "79654002"
    assert segs["ET"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    algo = segs["ET"].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "fedseg" and "0123abcd" in algo.AlgorithmVersion
    # BraTS 2023 labels (ET 3) give the same SEG; 3 and 4 together are refused.
    label23 = np.where(label == 4, 3, label)
    out23 = write_seg(label23, affine, case, linkage, "0123abcd", tmp_path / "seg23.dcm")
    np.testing.assert_array_equal(seg_labels(out23, linkage_dir, case.name), label)
    with pytest.raises(FedsegError, match="both 3 and 4"):
        write_seg(label23 + (label == 2) * 2, affine, case, linkage, "x", tmp_path / "bad.dcm")
    empty = write_seg(np.zeros(SHAPE, np.uint8), affine, case, linkage, "x", tmp_path / "e.dcm")
    assert not seg_labels(empty, linkage_dir, case.name).any()


def _harmonized(case: Path, out: Path, grid_vox: tuple[int, ...], moved_vox: tuple[int, ...]):
    """A stand-in harmonized case, with the transform and summary ``intake preprocess``
    stores: its grid is the source grid shifted by ``grid_vox`` voxels, and the head moved by
    ``moved_vox`` voxels (the stored transform maps case points to source points by that
    translation). So case voxel p shows source voxel p + grid_vox + moved_vox."""
    src = load_case(discover_cases(case)[0])
    affine = src.affine.copy()
    affine[:3, 3] += src.affine[:3, :3] @ np.asarray(grid_vox, float)
    moved = src.affine[:3, :3] @ np.asarray(moved_vox, float)  # RAS mm
    folder = out / case.name
    shutil.copytree(case, folder)
    (folder / SIDE_DIR).mkdir()
    to_source = sitk.TranslationTransform(3, tuple(np.diag([-1.0, -1.0, 1.0]) @ moved))
    sitk.WriteTransform(to_source, str(transform_path(folder, REFERENCE)))
    grid = {"affine": src.affine.tolist(), "shape": list(SHAPE)}
    summary = {"shape": list(SHAPE), "input_grids": {REFERENCE: grid}}
    (folder / SIDE_DIR / SUMMARY_FILE).write_text(json.dumps(summary))
    return folder, affine


def test_seg_goes_back_through_the_stored_transform(
    intaken: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    _, _, case, linkage_dir = intaken
    linkage = read_linkage(linkage_dir, case.name)
    folder, affine = _harmonized(case, tmp_path / "brats", (3, -2, 1), (-1, 0, 2))
    label = tumor(SHAPE, (18, 20, 9))  # on the harmonized grid
    out = write_seg(label, affine, folder, linkage, "m", tmp_path / "seg.dcm")
    back = seg_labels(out, linkage_dir, case.name)
    # Case voxel p shows source voxel p + (2, -2, 3).
    expected = np.zeros(SHAPE, np.uint8)
    expected[2:, :-2, 3:] = label[:-2, 2:, :-3]
    np.testing.assert_array_equal(back, expected)
    # A case harmonized before fedseg stored the source grid: one line, what to do.
    summary = json.loads((folder / SIDE_DIR / SUMMARY_FILE).read_text())
    del summary["input_grids"]
    (folder / SIDE_DIR / SUMMARY_FILE).write_text(json.dumps(summary))
    with pytest.raises(FedsegError, match="stores no transform back") as err:
        write_seg(label, affine, folder, linkage, "m", tmp_path / "seg2.dcm")
    assert "\n" not in str(err.value) and "intake preprocess" in str(err.value)


def test_cli_seg_needs_a_linkage_and_names_the_model(
    intaken: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    _, mapping, case, linkage_dir = intaken
    model = tiny_model(tmp_path / "tiny.pt")
    labels = tmp_path / "seg.nii.gz"
    src = read_linkage(linkage_dir, case.name).series[REFERENCE]
    nifti.save(labels, tumor(SHAPE, (20, 18, 10)), src.affine, label=True)
    args = ["intake", "seg", str(labels), "--case", str(case), "-m", str(model)]
    result = CliRunner().invoke(
        app, [*args, "--mapping", str(mapping), "-o", str(tmp_path / "s.dcm")]
    )
    assert result.exit_code == 0, result.output
    ds = pydicom.dcmread(tmp_path / "s.dcm")
    version = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion
    assert model_id(model) in version
    no_link = tmp_path / "site" / "nolink.yaml"
    no_link.write_text("salt: site-secret\n")
    result = CliRunner().invoke(app, [*args, "--mapping", str(no_link), "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "no `linkage:` folder" in str(result.exception)
    other_salt = tmp_path / "site" / "other.yaml"
    other_salt.write_text("salt: another-secret\nlinkage: linkage\n")
    result = CliRunner().invoke(
        app, [*args, "--mapping", str(other_salt), "-o", str(tmp_path / "y")]
    )
    assert "another salt" in str(result.exception)
    shutil.rmtree(linkage_dir / case.name)  # as for a case intaken before the linkage
    result = CliRunner().invoke(app, [*args, "--mapping", str(mapping), "-o", str(tmp_path / "z")])
    assert f"case {case.name} has no linkage" in str(result.exception)
    assert case.name == pseudonym(intaken[0], "site-secret")


def test_segment_dicom_seg_checks_the_way_back_before_any_work(
    intaken: tuple[str, Path, Path, Path], tmp_path: Path
) -> None:
    case = intaken[2]
    model = tiny_model(tmp_path / "tiny.pt")
    out = tmp_path / "seg.nii.gz"
    args = ["segment", str(case), "-m", str(model), "-o", str(out)]
    alone = CliRunner().invoke(app, [*args, "--dicom-seg", str(tmp_path / "s.dcm")])
    assert "--dicom-seg and --mapping go together" in str(alone.exception)
    no_link = tmp_path / "site" / "nolink.yaml"
    no_link.parent.mkdir(exist_ok=True)
    no_link.write_text("salt: site-secret\n")
    refused = CliRunner().invoke(
        app, [*args, "--dicom-seg", str(tmp_path / "s.dcm"), "--mapping", str(no_link)]
    )
    assert "no `linkage:` folder" in str(refused.exception)
    assert not out.exists()  # refused before segmenting: nothing half done


def test_store_refuses_a_file_that_is_not_dicom(tmp_path: Path) -> None:
    cfg = PacsConfig(peer=PacsPeer(host="127.0.0.1", port=9, ae_title="PACS"))
    text = tmp_path / "notes.txt"
    text.write_text("not dicom")
    with pytest.raises(FedsegError, match=r"notes\.txt: not a DICOM file") as err:
        store(cfg, [text])  # refused before any connection is tried
    assert "\n" not in str(err.value)
