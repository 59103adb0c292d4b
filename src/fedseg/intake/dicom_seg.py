"""``fedseg intake seg``: a label map back into the hospital's PACS as a DICOM Segmentation.

The label map (BraTS 2021 labels 1 NCR, 2 ED, 4 ET, or BraTS 2023 ones with ET 3) lies on a
case's grid: the NIfTI case written by ``intake dicom`` (the source series' own grid) or the
harmonized case of ``intake preprocess`` (the atlas grid). It is brought onto the grid of
the source T1Gd series through the case's stored rigid transform (nearest neighbour) and
written with highdicom as a BINARY SEG with three disjoint segments NCR, ED, ET (SNOMED CT
coded, category "Morphologically Abnormal Structure", anatomic region brain, algorithm
"fedseg" with the model's id), one frame per source slice that holds a label, referencing
that series. The SEG goes back into the site's own PACS, so it carries the real patient's
identifiers, taken from the source series' headers kept in the site's private linkage.

WT and TC are not written as segments: they are unions of the three (a viewer shows them by
showing those), and the three disjoint segments are the label map itself, losslessly.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from fedseg import __version__
from fedseg.data.labels import ED, ET, NCR, Layout, to_brats2021
from fedseg.errors import FedsegError
from fedseg.intake import itk_bridge
from fedseg.intake.linkage import REFERENCE, CaseLinkage, SourceSeries
from fedseg.intake.preprocess import SIDE_DIR, SUMMARY_FILE, transform_path

#: (segment label, BraTS 2021 value, description, SNOMED CT property type), in segment order.
SEGMENTS = (
    ("NCR", NCR, "necrotic tumour core", codes.SCT.Necrosis),
    ("ED", ED, "peritumoral edema", codes.SCT.Edema),
    ("ET", ET, "enhancing tumour", codes.SCT.Neoplasm),
)
SERIES_NUMBER = 9000
#: Type 2 attributes highdicom copies from the source; empty when a source lacks them.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)
_TOL_MM = 0.05


def as_brats2021(labels: np.ndarray) -> np.ndarray:
    """A label map in BraTS 2021 values: 2021 labels kept, 2023 ones (ET 3) converted."""
    values = set(np.unique(labels).astype(int).tolist())
    if {3, 4} <= values:
        raise FedsegError(
            "label map holds both 3 and 4: neither BraTS 2021 (ET 4) nor BraTS 2023 (ET 3) "
            "labels; give the label map `fedseg segment` wrote"
        )
    return to_brats2021(labels, Layout.BRATS2023 if 3 in values else Layout.BRATS2021)


def _same_grid(affine: np.ndarray, shape: tuple[int, ...], src: SourceSeries) -> bool:
    return tuple(shape) == src.shape and np.allclose(affine, src.affine, atol=1e-3)


def to_source_grid(
    labels: np.ndarray, affine: np.ndarray, case_folder: Path, linkage: CaseLinkage
) -> np.ndarray:
    """A label map (X, Y, Z) on the case's grid, on the source T1Gd series' grid instead.

    On the source grid already (an ``intake dicom`` case): unchanged. On a harmonized
    case's grid: resampled through ``<case>/intake/t1ce_to_atlas.tfm`` (nearest neighbour),
    after checking that the case was harmonized from that very series' image."""
    src = linkage.series[REFERENCE]
    if _same_grid(affine, labels.shape, src):
        return labels.astype(np.uint8)
    side = Path(case_folder) / SIDE_DIR
    summary_path, tfm = side / SUMMARY_FILE, transform_path(Path(case_folder), REFERENCE)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    grid = summary.get("input_grids", {}).get(REFERENCE)
    if grid is None or not tfm.is_file():
        raise FedsegError(
            f"case {linkage.case_id}: the label map is not on the source series' grid and the "
            f"case stores no transform back to it ({side} lacks it: harmonized before fedseg "
            "kept one, or not a harmonized case): rerun `fedseg intake preprocess` on it"
        )
    if not _same_grid(np.asarray(grid["affine"]), tuple(grid["shape"]), src):
        raise FedsegError(
            f"case {linkage.case_id}: harmonized from another image than the series the "
            "linkage records (intake dicom ran again since?): rerun `fedseg intake preprocess`"
        )
    if tuple(labels.shape) != tuple(summary.get("shape", ())):
        raise FedsegError(
            f"label map of shape {labels.shape} is not on the grid of case {linkage.case_id} "
            f"{tuple(summary.get('shape', ()))}: give the label map segmented from this case"
        )
    to_atlas = sitk.ReadTransform(str(tfm))  # maps case-grid points to source points
    reference = sitk.Image([int(v) for v in src.shape], sitk.sitkUInt8)
    itk_bridge.set_geometry(reference, src.affine)
    moving = itk_bridge.from_array(labels.astype(np.uint8), affine)
    moved = sitk.Resample(
        moving, reference, to_atlas.GetInverse(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    return itk_bridge.to_array(moved, np.uint8)


def _source_images(linkage: CaseLinkage) -> list[pydicom.Dataset]:
    """The T1Gd headers in slice order, checked against the grid they were read into."""
    src = linkage.series[REFERENCE]
    headers = linkage.reference_headers()
    if len(headers) != src.shape[2]:
        raise FedsegError(
            f"case {linkage.case_id}: the T1Gd series is one multi-frame instance; a DICOM SEG "
            "on such a series is not supported yet (export the series as single slices)"
        )
    lps = np.diag([-1.0, -1.0, 1.0]) @ src.affine[:3]
    for k, ds in enumerate(headers):
        where = lps @ np.array([0.0, 0.0, k, 1.0])
        if not np.allclose(np.asarray(ds.ImagePositionPatient, float), where, atol=_TOL_MM):
            raise FedsegError(
                f"case {linkage.case_id}: slice {k} of the linked T1Gd series is not where its "
                "NIfTI image puts it; rerun `fedseg intake dicom` with the linkage set"
            )
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return headers


def build_seg(
    labels_on_source: np.ndarray, linkage: CaseLinkage, model_id: str
) -> hd.seg.Segmentation:
    """The SEG of a BraTS 2021 label map already on the source T1Gd grid (X, Y, Z)."""
    src = linkage.series[REFERENCE]
    if tuple(labels_on_source.shape) != src.shape:
        raise FedsegError(f"label map {labels_on_source.shape} is not on the source grid")
    images = _source_images(linkage)
    numbers = np.zeros(labels_on_source.shape, np.uint8)
    for i, (_, value, _, _) in enumerate(SEGMENTS):
        numbers[labels_on_source == value] = i + 1
    algorithm = hd.AlgorithmIdentificationSequence(
        name="fedseg",
        version=f"{__version__} model {model_id}",
        family=codes.DCM.ArtificialIntelligence,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=f"{name} ({text})",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=prop,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Brain],
        )
        for i, (name, _, text, prop) in enumerate(SEGMENTS)
    ]
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=np.ascontiguousarray(numbers.transpose(2, 1, 0)),  # (slices, rows, columns)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="fedseg",
        manufacturer_model_name=f"fedseg model {model_id}",
        software_versions=__version__,
        device_serial_number=model_id,
        content_label="FEDSEG",
        content_description="Brain tumour sub-regions (BraTS) by fedseg",
        series_description="fedseg tumour segmentation",
        omit_empty_frames=bool(numbers.any()),  # an empty map keeps its frames: a valid SEG
    )


def write_seg(
    labels: np.ndarray,
    affine: np.ndarray,
    case_folder: Path,
    linkage: CaseLinkage,
    model_id: str,
    out: Path,
) -> Path:
    """Label map on the case's grid -> DICOM SEG file ``out`` on the source series' grid."""
    on_source = to_source_grid(as_brats2021(labels), affine, case_folder, linkage)
    seg = build_seg(on_source, linkage, model_id)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    seg.save_as(partial)
    partial.replace(out)
    return out


def case_linkage(case: Path, mapping: Path, out: Path) -> tuple[CaseLinkage, Path]:
    """The linkage of the one case in folder ``case`` through the intake's mapping YAML
    ``mapping`` (its salt and ``linkage:`` folder), and the case folder, after checking that
    the SEG file ``out`` can be written; one-line ``FedsegError`` when the way back is
    missing (no linkage folder, a case intaken without it, another salt)."""
    from fedseg.data.cases import discover_cases
    from fedseg.intake.config import load_mapping
    from fedseg.intake.deidentify import pseudonym
    from fedseg.intake.linkage import read_linkage
    from fedseg.output_paths import check_output_file

    cfg = load_mapping(mapping)
    if cfg.linkage is None:
        raise FedsegError(
            f"{mapping}: no `linkage:` folder, so intake kept no way back to the studies; set "
            "one and rerun `fedseg intake dicom` on the DICOM folder"
        )
    check_output_file(out, "DICOM SEG")
    cases = discover_cases(case)
    if len(cases) != 1:
        raise FedsegError(f"{case} holds {len(cases)} cases; give the one case folder segmented")
    linkage = read_linkage(cfg.linkage, cases[0].case_id)
    if pseudonym(linkage.study_uid, cfg.resolved_salt(), cfg.case_prefix) != linkage.case_id:
        raise FedsegError(
            f"{cfg.linkage}: the linkage of {linkage.case_id} was made with another salt or "
            "prefix than this mapping YAML's; use the mapping YAML of that intake"
        )
    return linkage, cases[0].folder or case


def seg_for_case(
    labels: Path, case: Path, mapping: Path, models: list[Path], out: Path
) -> tuple[Path, CaseLinkage]:
    """The label map file ``labels`` of the case folder ``case`` as DICOM SEG ``out``
    (``case_linkage`` finds the way back); ``models`` are the model files or selections
    that made it (their id goes into the SEG). Returns the file written and the linkage."""
    from fedseg.data import nifti
    from fedseg.model.identity import models_id
    from fedseg.tracking.selection import expand_selection

    linkage, folder = case_linkage(case, mapping, out)
    files, _ = expand_selection(models, "mean")
    label_map = nifti.load_array(labels, dtype=np.int32)
    affine = np.asarray(nifti.load_header(labels).affine)
    return write_seg(label_map, affine, folder, linkage, models_id(files), out), linkage


def seg_written_line(written: Path, linkage: CaseLinkage) -> str:
    """What the CLI says after writing a SEG."""
    src = linkage.series[REFERENCE]
    return (
        f"wrote {written}: DICOM SEG of {linkage.case_id} on series {src.number} "
        f"'{src.description}' (patient identifiers included: for this site's PACS only)"
    )
