"""``fedseg intake preprocess``: the harmonized BraTS pipeline, case by case, resumable.

Per case: reorient every sequence to the atlas's axis order; estimate N4 bias fields (on
shrunken copies, used only to drive the registration); register each sequence rigidly to
T1Gd and T1Gd to the SRI24 T1 (Mattes MI, multi-resolution); compose the two into ONE
transform per sequence and resample each original image once onto the atlas grid
(240x240x155 at 1 mm, or a coarser isotropic grid); mask with a brain extractor. A label
found with the case is taken to lie on the T1Gd grid and follows T1Gd (nearest neighbour).

Each case is written to ``OUT/.partial/<case>`` and renamed into place when complete, so an
interrupted run resumes by skipping the cases already there. Beside the images,
``<case>/intake/`` keeps each sequence's transform (``<m>_to_atlas.tfm``: case-grid points to
input-image points) and ``summary.json`` with the input grids they map to, by which a label
map goes back to the source series (``intake.dicom_seg``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fedseg.data import nifti
from fedseg.data.atlas import Atlas, load_atlas
from fedseg.data.cases import MODALITIES, Case, discover_cases, write_case
from fedseg.data.labels import to_brats2021
from fedseg.errors import FedsegError
from fedseg.intake import brain_extraction, itk_bridge, qc
from fedseg.intake.config import PreprocessConfig
from fedseg.intake.dicom_to_nifti import case_paths
from fedseg.intake.registration import (
    block_average,
    compose,
    describe,
    n4_corrected,
    rigid_register,
)

PARTIAL = ".partial"
#: Side files of a harmonized case live here, inside the case folder.
SIDE_DIR = "intake"
#: The case's record of its harmonization, in SIDE_DIR.
SUMMARY_FILE = "summary.json"


def transform_path(case_folder: Path, m: str) -> Path:
    """Where a harmonized case keeps modality ``m``'s transform: case-grid points to the
    points of its input image (ITK, readable with ``sitk.ReadTransform``)."""
    return Path(case_folder) / SIDE_DIR / f"{m}_to_atlas.tfm"


@dataclass
class AtlasSpace:
    """The atlas on the output grid (sitk ``grid``), as the pipeline needs it."""

    grid: sitk.Image
    registration_t1: sitk.Image
    brain: np.ndarray
    white_matter: np.ndarray
    orientation: str
    spacing: float

    @property
    def affine(self) -> np.ndarray:
        return itk_bridge.affine_of(self.grid)


def atlas_space(cfg: PreprocessConfig, atlas: Atlas | None = None) -> AtlasSpace:
    """Prepare the SRI24 atlas for ``cfg.spacing`` (None: its own 1 mm grid)."""
    atlas = atlas or load_atlas()
    t1 = itk_bridge.from_array(atlas.t1, atlas.affine)
    grid = itk_bridge.reference_grid(atlas.affine, atlas.t1.shape, cfg.spacing)

    def on_grid(arr: np.ndarray) -> np.ndarray:
        img = itk_bridge.from_array(arr.astype(np.float32), atlas.affine)
        if cfg.spacing is None:
            return arr
        # Block-average first so a coarse grid sees the mean probability, not one sample.
        img = block_average(img, cfg.spacing)
        return itk_bridge.to_array(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear))

    tissue = atlas.csf + atlas.gm + atlas.wm
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(t1.GetDirection())
    return AtlasSpace(
        grid=grid,
        registration_t1=block_average(t1, max(cfg.registration_spacing, cfg.spacing or 0)),
        brain=on_grid(tissue) > 0.5 if cfg.spacing else atlas.brain,
        white_matter=on_grid(atlas.wm),
        orientation=orientation,
        spacing=float(cfg.spacing or nifti.spacing_of(atlas.affine)[0]),
    )


@dataclass
class CaseResult:
    """What happened to one case: ``done``/``exists``/``skipped``/``failed``."""

    case_id: str
    status: str
    seconds: float = 0.0
    note: str = ""
    transforms: dict[str, dict[str, float]] = field(default_factory=dict)


def _read(case: Case, m: str, orientation: str) -> sitk.Image:
    src = case.images[m]
    arr = nifti.load_array(src.path, src.channel)
    image = itk_bridge.from_array(arr, np.asarray(nifti.load_header(src.path).affine))
    return sitk.DICOMOrient(image, orientation)


def _grid(case: Case, m: str) -> dict[str, list]:
    """The grid of a case's input image as stored (RAS affine and shape, before reorienting)."""
    header = nifti.load_header(case.images[m].path)
    return {"affine": np.asarray(header.affine).tolist(), "shape": list(header.shape[:3])}


def _complete(folder: Path, case_id: str) -> bool:
    return (folder / SIDE_DIR / SUMMARY_FILE).exists() and all(
        p.exists() for p in case_paths(folder, case_id).values()
    )


def preprocess_case(case: Case, out: Path, space: AtlasSpace, cfg: PreprocessConfig) -> CaseResult:
    """Run the pipeline on one complete case and write ``out/<case_id>`` atomically."""
    start = time.perf_counter()
    extractor = brain_extraction.get(cfg.brain_extractor)
    images = {m: _read(case, m, space.orientation) for m in MODALITIES}
    moving = {
        m: n4_corrected(block_average(images[m], cfg.registration_spacing), cfg) for m in MODALITIES
    }
    to_t1ce = rigid_register(space.registration_t1, moving["t1ce"], cfg, init="moments")
    composed: dict[str, sitk.Transform] = {}
    metrics: dict[str, float] = {"t1ce": to_t1ce.metric}
    for m in MODALITIES:
        if m == "t1ce":
            composed[m] = to_t1ce.transform
            continue
        seq = rigid_register(moving["t1ce"], moving[m], cfg, init="identity")
        metrics[m] = seq.metric
        composed[m] = compose(seq.transform, to_t1ce.transform)
    grid = space.grid
    registered = np.stack(
        [
            itk_bridge.to_array(
                sitk.Resample(images[m], grid, composed[m], sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            )
            for m in MODALITIES
        ]
    )
    label = None
    if case.label is not None:
        raw = nifti.load_array(case.label, dtype=np.int32)
        lab = itk_bridge.from_array(
            to_brats2021(raw, case.layout).astype(np.uint8),
            np.asarray(nifti.load_header(case.label).affine),
        )
        lab = sitk.DICOMOrient(lab, space.orientation)
        moved = sitk.Resample(lab, grid, composed["t1ce"], sitk.sitkNearestNeighbor, 0)
        label = itk_bridge.to_array(moved, np.uint8)
    affine = space.affine
    inp = brain_extraction.BrainExtractionInput(registered, affine, space.brain)
    mask = brain_extraction.apply_mask(extractor, inp)
    volumes = registered * mask[None]

    staging_root = out / PARTIAL
    shutil.rmtree(staging_root / case.case_id, ignore_errors=True)
    staging = write_case(staging_root, case.case_id, volumes, label, affine)
    side = staging / SIDE_DIR
    side.mkdir()
    for m in MODALITIES:
        sitk.WriteTransform(composed[m], str(transform_path(staging, m)))
    qc.registration_png(
        side / "qc.png",
        registered[MODALITIES.index("t1ce")],
        space.brain,
        space.white_matter,
        space.spacing,
        case.case_id,
    )
    seconds = time.perf_counter() - start
    transforms = {m: {**describe(composed[m]), "metric": round(metrics[m], 4)} for m in MODALITIES}
    summary = {
        "case_id": case.case_id,
        "seconds": round(seconds, 2),
        "spacing_mm": space.spacing,
        "shape": list(volumes.shape[1:]),
        "brain_extractor": cfg.brain_extractor,
        "config": cfg.model_dump(mode="json"),
        "transforms_output_to_input": transforms,
        # The grids the transforms map to (``<m>_to_atlas.tfm``): a DICOM SEG checks them.
        "input_grids": {m: _grid(case, m) for m in MODALITIES},
    }
    (side / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    final = out / case.case_id
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return CaseResult(case.case_id, "done", seconds, transforms=transforms)


@dataclass
class PreprocessReport:
    results: list[CaseResult]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def to_json(self) -> str:
        return json.dumps([asdict(r) for r in self.results], indent=2)


def preprocess_cases(
    root: Path,
    out: Path,
    cfg: PreprocessConfig,
    on_start: Callable[[int], None] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> PreprocessReport:
    """Harmonize every case under ``root`` into ``out``; cases already complete are skipped."""
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve():
        raise FedsegError(f"{out}: the output folder must differ from the input folder")
    brain_extraction.get(cfg.brain_extractor)  # fail before any work on a wrong name
    cases = discover_cases(root)
    out.mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start(len(cases))
    space: AtlasSpace | None = None
    results = []
    for case in cases:
        if case.lacking:  # missing, or declared absent: registration needs all four
            result = CaseResult(case.case_id, "skipped", note=f"missing {', '.join(case.lacking)}")
        elif _complete(out / case.case_id, case.case_id):
            result = CaseResult(case.case_id, "exists")
        else:
            space = space or atlas_space(cfg)
            try:
                result = preprocess_case(case, out, space, cfg)
            except FedsegError as exc:
                result = CaseResult(case.case_id, "failed", note=str(exc))
            except RuntimeError as exc:  # SimpleITK reports failures (e.g. no overlap) this way
                msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
                result = CaseResult(case.case_id, "failed", note=f"SimpleITK: {msg}")
        results.append(result)
        if on_case:
            on_case(result)
    shutil.rmtree(out / PARTIAL, ignore_errors=True)
    return PreprocessReport(results)
