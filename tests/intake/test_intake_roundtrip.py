"""The clinic's round trip against a real Orthanc, one command per step: retrieve a study,
intake it (keeping the site's linkage), harmonize, segment, write the DICOM SEG, store it
back; the PACS then returns it on C-FIND/C-GET, referencing the source series, and it reads
back as the label map `segment` wrote, on the source grid. Nothing fedseg writes outside the
linkage carries an identifying value, except the SEG, which carries the real patient's."""

from __future__ import annotations

import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.data import nifti
from fedseg.data.atlas import Atlas
from fedseg.intake import itk_bridge
from fedseg.intake.config import load_pacs_config
from fedseg.intake.dicom_seg import SEGMENTS
from fedseg.intake.linkage import REFERENCE, read_linkage
from fedseg.intake.pacs import StudyQuery, find, retrieve
from fedseg.intake.preprocess import transform_path
from fedseg.intake.registration import euler_from, matrix_offset
from tests.intake.conftest import Orthanc, atlas_truth, native_transform
from tests.intake.intake_synth import PATIENT, SERIES, assert_phi_free, write_series
from tests.model.modelkit import tiny_model

pytestmark = pytest.mark.slow
_register()
SPACING = 4.0  # the scanner's voxels (mm); the harmonized grid is coarser still


def write_head_study(atlas: Atlas, folder: Path) -> str:
    """A head study as a scanner writes it: the atlas-made contrasts of the preprocessing
    test, each sequence moved by its own rigid motion, as four axial DICOM series."""
    truth, _, grid = atlas_truth(atlas, 6.0)
    corner = [(s - 1) / 2 for s in grid.GetSize()]
    center = np.asarray(grid.TransformContinuousIndexToPhysicalPoint(corner))
    size = [round(202 / SPACING), round(240 / SPACING), round(154 / SPACING)]
    native = sitk.Image(size, sitk.sitkFloat32)
    native.SetSpacing((SPACING,) * 3)
    native.SetOrigin(tuple(-np.asarray(size) * SPACING / 2))  # as write_series places slices
    study_uid = generate_uid()
    for i, (m, description) in enumerate(SERIES.items()):
        a, b = matrix_offset(native_transform(m))
        to_atlas = euler_from(a, b + center)  # the scanner's isocentre is the atlas centre
        image = itk_bridge.from_array(truth[m], itk_bridge.affine_of(grid))
        moved = sitk.Resample(image, native, to_atlas, sitk.sitkLinear, 0.0)
        volume = np.clip(itk_bridge.to_array(moved), 0, 32000).astype(np.int16)
        write_series(
            folder / m,
            volume,
            study_uid=study_uid,
            description=description,
            number=i + 2,
            spacing=(SPACING,) * 3,
        )
    return study_uid


def fedseg(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args[:2]}: {result.output}\n{result.exception!r}"
    return result.output


def test_round_trip_through_the_pacs(orthanc: Orthanc, atlas: Atlas, tmp_path: Path) -> None:
    start = time.perf_counter()
    study_uid = write_head_study(atlas, tmp_path / "scanner")
    orthanc.upload(sorted((tmp_path / "scanner").rglob("*.dcm")))
    pacs = orthanc.pacs_yaml(tmp_path / "pacs.yaml")
    site = tmp_path / "site-private"  # the mapping YAML and the linkage: the site's secrets
    site.mkdir()
    mapping = site / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"salt": "round-trip-secret", "linkage": "linkage"}))
    model = tiny_model(tmp_path / "models" / "tiny.pt", seed=3)
    work = tmp_path / "work"  # everything fedseg writes outside the site's private folders

    fedseg("intake", "pacs", "retrieve", "--config", pacs, "--study-uid", study_uid,
           "--out", site / "dicom", "--convert", work / "nifti", "--mapping", mapping)  # fmt: skip
    fedseg("intake", "preprocess", work / "nifti", "--out", work / "brats", "--spacing", 8)
    (case,) = [p for p in (work / "brats").iterdir() if p.is_dir()]
    labels = work / "results" / "seg.nii.gz"
    seg_file = tmp_path / "to-pacs" / "seg.dcm"
    # segment writes the label map and, through the site's linkage, the DICOM SEG
    fedseg("segment", "-m", model, case, "-o", labels, "--overlap", 0.25,
           "--dicom-seg", seg_file, "--mapping", mapping)  # fmt: skip
    stored = fedseg("intake", "pacs", "store", seg_file, "--config", pacs)
    assert "1 of 1 file(s) stored" in stored
    commands_s = time.perf_counter() - start

    # The PACS has it, in the source study: C-FIND finds the SEG series, C-GET returns it.
    cfg = load_pacs_config(pacs)
    (match,) = find(cfg, StudyQuery(study_uid=study_uid, modality="SEG", series_description="*"))
    seg_series = [s for s in match.series if s.modality == "SEG"]
    assert len(seg_series) == 1 and seg_series[0].description == "fedseg tumour segmentation"
    match.series = seg_series
    got = retrieve(cfg, [match], tmp_path / "back")
    assert got.received == 1 and got.failed == 0
    (back,) = (tmp_path / "back").rglob("*.dcm")
    seg = hd.seg.segread(back)
    linkage = read_linkage(site / "linkage", case.name)
    source = linkage.series[REFERENCE]
    t1ce = pydicom.dcmread(next((tmp_path / "scanner" / "t1ce").iterdir()))  # the original
    assert seg.StudyInstanceUID == study_uid == t1ce.StudyInstanceUID
    assert seg.FrameOfReferenceUID == t1ce.FrameOfReferenceUID
    assert [r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence] == [t1ce.SeriesInstanceUID]
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == source.shape[2]
    # The SEG is for the hospital's own PACS: the real patient's identifiers, from the source.
    for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert str(seg.get(key)) == PATIENT[key] == str(t1ce.get(key)), key

    # Read back: the label map `segment` wrote, taken through the case's stored transform
    # onto the source T1Gd grid (nearest neighbour).
    numbers = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source.instance_uids),
        combine_segments=True,
        ignore_spatial_locations=True,
    ).transpose(2, 1, 0)
    written = nifti.load_array(labels, dtype=np.uint8)
    reference = sitk.Image([int(v) for v in source.shape], sitk.sitkUInt8)
    itk_bridge.set_geometry(reference, source.affine)
    to_case = sitk.ReadTransform(str(transform_path(case, REFERENCE))).GetInverse()
    moving = itk_bridge.from_array(written, np.asarray(nifti.load_header(labels).affine))
    expected = itk_bridge.to_array(
        sitk.Resample(moving, reference, to_case, sitk.sitkNearestNeighbor, 0), np.uint8
    )
    for i, (name, value, _, _) in enumerate(SEGMENTS):
        np.testing.assert_array_equal(numbers == i + 1, expected == value, err_msg=name)
    assert (expected > 0).sum() > 100  # the comparison is not between two empty maps
    # The SEG's own geometry (highdicom's volume: frame, row, column -> LPS mm) lies on the
    # source series' grid: its rows and columns, its slice axis (highdicom may run it the
    # other way) and spacing, and its first frame on one of its slices.
    volume = np.asarray(seg.get_volume(combine_segments=True).affine)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ source.affine  # (i, j, k) -> LPS mm
    np.testing.assert_allclose(volume[:3, [2, 1]], lps[:3, :2], atol=1e-4)
    np.testing.assert_allclose(np.abs(volume[:3, 0]), np.abs(lps[:3, 2]), atol=1e-4)
    k = np.linalg.solve(lps[:3, :3], volume[:3, 3] - lps[:3, 3])
    np.testing.assert_allclose(k, [0, 0, np.round(k[2])], atol=1e-3)

    # No identifying value in anything else fedseg wrote; the linkage holds the identity.
    uids = [t1ce.FrameOfReferenceUID, str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID)]
    for s in linkage.series.values():
        uids += [s.series_uid, *s.instance_uids]
    assert_phi_free(work, study_uid, uids)
    linkage_text = (site / "linkage" / case.name / "linkage.json").read_text()
    assert study_uid in linkage_text
    print(f"round trip: {commands_s:.1f} s for the six commands")
