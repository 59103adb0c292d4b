"""Sanity checks of a site's cases before training: files, headers, voxel values, labels.

Every problem is reported with the case id, a severity, a short code and a one-line message.
Errors make a case unusable for training (missing/unreadable files, grids that do not match,
non-finite values, empty volumes, unknown label values); warnings are worth a look but do not
stop training:

- ``empty-tumor`` (warning): a label map with no tumor voxel is a valid case (the BraTS
  empty-mask rules score it), but in a glioma data set it is more often a missing annotation.
- ``label-order`` (warning): NCR and ED look swapped (the "core" label forms the tumor's
  outer surface), as when MSD labels (1 ED, 2 NET) sit in a BraTS folder (1 NCR, 2 ED).
- ``negative-intensity`` (warning): skull-stripped MRI is non-negative; negative values mean
  the volume was already normalized or resampled with ringing. The z-scoring still works.
- ``absent-but-present`` (warning): the site declares a modality absent (``fedseg_site.yaml``)
  but the case has its file; the file is not read, so that the site's cases look alike.

Missing modalities: a modality the site declares absent is one site-level note
(``site_notes``), never a case problem; any other gap is the error ``missing-image``. A
generator-made image (``<case><key>.syn.nii.gz``) counts as the modality's image and is
listed per case (info ``synthetic``: "flair synthetic, generator <hash16>"), so a completed
case passes as a full one. Infos never change a case's status.

The dataset check streams: headers are read without voxel data, each volume is read once,
and only one case's data is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path

import nibabel as nib
import numpy as np
from pydantic import BaseModel, ConfigDict, computed_field
from scipy import ndimage

from fedseg.data import nifti
from fedseg.data.cases import (
    FILE_KEYS,
    MODALITIES,
    Case,
    declared_absent,
    discover_cases,
    synthetic_generator,
)
from fedseg.data.labels import ED, NCR, TO_BRATS2021, Layout, label_values
from fedseg.data.preprocess import nonzero_box
from fedseg.data.site_config import SITE_CONFIG_FILE
from fedseg.errors import FedsegError

#: Tolerances when comparing the float geometry of two volumes (mm, and mm per voxel).
AFFINE_ATOL_MM = 1e-3
SPACING_RTOL = 1e-4

#: How each layout's label values look, for hints when a folder holds another layout's labels.
_LAYOUT_NAMES: dict[Layout, str] = {
    Layout.BRATS2021: "BraTS 2017-2021 labels (ET=4)",
    Layout.BRATS2023: "BraTS 2023+ labels (ET=3)",
    Layout.MSD: "MSD Task01 labels (1 ED, 2 NET, 3 ET)",
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"  # listed, never a problem (e.g. a synthetic image)


class Problem(BaseModel):
    """One finding about one case."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    severity: Severity
    code: str
    message: str


class CaseReport(BaseModel):
    """All problems of one case; ``status`` is ok, warning or error (the worst severity)."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    problems: tuple[Problem, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> str:
        severities = {p.severity for p in self.problems}
        if Severity.ERROR in severities:
            return "error"
        return "warning" if Severity.WARNING in severities else "ok"


class DatasetReport(BaseModel):
    """The report of a whole site folder: per-case reports, the counts by status and the
    site-level ``notes`` (``site_notes``: declared absences, completed modalities)."""

    model_config = ConfigDict(frozen=True)

    root: str
    layout: Layout
    cases: tuple[CaseReport, ...]
    ok: int
    with_warnings: int
    with_errors: int
    notes: tuple[str, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        """True when no case has an error (warnings allowed)."""
        return self.with_errors == 0

    @classmethod
    def from_cases(
        cls,
        root: Path,
        layout: Layout,
        reports: Iterable[CaseReport],
        notes: Iterable[str] = (),
    ) -> DatasetReport:
        reports = tuple(reports)
        statuses = [r.status for r in reports]
        return cls(
            root=str(root),
            layout=layout,
            cases=reports,
            ok=statuses.count("ok"),
            with_warnings=statuses.count("warning"),
            with_errors=statuses.count("error"),
            notes=tuple(notes),
        )


class _Collector:
    """Accumulates the problems of one case."""

    def __init__(self, case_id: str) -> None:
        self.case_id = case_id
        self.problems: list[Problem] = []

    def error(self, code: str, message: str) -> None:
        self.problems.append(
            Problem(case_id=self.case_id, severity=Severity.ERROR, code=code, message=message)
        )

    def warning(self, code: str, message: str) -> None:
        self.problems.append(
            Problem(case_id=self.case_id, severity=Severity.WARNING, code=code, message=message)
        )

    def info(self, code: str, message: str) -> None:
        self.problems.append(
            Problem(case_id=self.case_id, severity=Severity.INFO, code=code, message=message)
        )


def _open(path: Path, what: str, out: _Collector, missing_code: str) -> nib.Nifti1Image | None:
    """The lazily loaded image at ``path``, or None after recording why it cannot be opened."""
    if not path.exists():
        out.error(missing_code, f"{what}: file {path.name} not found")
        return None
    try:
        return nifti.load_header(path)
    except FedsegError as exc:
        out.error(f"unreadable-{'label' if what == 'label' else 'image'}", f"{what}: {exc}")
        return None


def _axcodes(affine: np.ndarray) -> str:
    return "".join(nib.aff2axcodes(affine))


def _compare_grid(
    name: str,
    shape: tuple[int, ...],
    affine: np.ndarray,
    ref_name: str,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    out: _Collector,
) -> None:
    """Record the first way the grid of ``name`` differs from the reference grid, if any.

    Checked in the order shape, orientation, spacing, then the full affine (origin/shear),
    so that one real difference gives one problem rather than four.
    """
    if shape != ref_shape:
        out.error("shape-mismatch", f"{name} shape {shape} differs from {ref_name} {ref_shape}")
        return
    codes, ref_codes = _axcodes(affine), _axcodes(ref_affine)
    if codes != ref_codes:
        out.error(
            "orientation-mismatch",
            f"{name} orientation {codes} differs from {ref_name} {ref_codes}; reorient it",
        )
        return
    spacing, ref_spacing = nifti.spacing_of(affine), nifti.spacing_of(ref_affine)
    if not np.allclose(spacing, ref_spacing, rtol=SPACING_RTOL, atol=SPACING_RTOL):
        out.error(
            "spacing-mismatch",
            f"{name} spacing {_fmt(spacing)} mm differs from {ref_name} {_fmt(ref_spacing)} mm",
        )
        return
    if not np.allclose(affine, ref_affine, rtol=0, atol=AFFINE_ATOL_MM):
        shift = float(np.abs(affine[:3, 3] - ref_affine[:3, 3]).max())
        out.error(
            "affine-mismatch",
            f"{name} affine differs from {ref_name} (origin off by up to {shift:.3g} mm); "
            "co-register the volumes",
        )


def _fmt(values: np.ndarray) -> str:
    return "x".join(f"{v:.3g}" for v in values)


def _check_intensities(name: str, data: np.ndarray, out: _Collector) -> None:
    """Non-finite values, all-zero volume, negative values of one image volume."""
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        n_bad = int(data.size - np.count_nonzero(finite))
        if n_bad:
            out.error("non-finite", f"{name} has {n_bad} NaN/inf voxels")
            data = np.where(finite, data, 0)
    if not np.any(data):
        out.error("empty-image", f"{name} is all zero")
        return
    low = data.min()
    if low < 0:
        out.warning(
            "negative-intensity",
            f"{name} has negative intensities (min {float(low):.3g}); "
            "expected raw skull-stripped MRI",
        )


def _label_hint(layout: Layout, values: set[int]) -> str:
    """Which other layout's label set ``values`` fits, as a hint; empty when none does."""
    for other in (Layout.BRATS2021, Layout.BRATS2023, Layout.MSD):
        if other is not layout and values <= label_values(other):
            return f"; looks like {_LAYOUT_NAMES[other]}"
    return ""


def _check_label(layout: Layout, data: np.ndarray, out: _Collector) -> None:
    """Non-finite/non-integer values, values outside the layout's set, empty tumor."""
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            out.error("non-finite", "label has NaN/inf voxels")
            return
        if not np.array_equal(data, np.round(data)):
            out.error("label-not-integer", "label has non-integer values; it is not a label map")
            return
    values = {int(v) for v in np.unique(data)}
    allowed = label_values(layout)
    unknown = sorted(values - allowed)
    if unknown:
        out.error(
            "label-values",
            f"label values {unknown} are not {_LAYOUT_NAMES[layout]} (allowed "
            f"{sorted(allowed)}){_label_hint(layout, values)}",
        )
    elif values == {0}:
        out.warning("empty-tumor", "label has no tumor voxel (all zero)")
    else:
        _check_label_order(layout, data, out)


#: Fewest voxels of each of NCR and ED before their placement is judged.
LABEL_ORDER_MIN_VOXELS = 20


def _check_label_order(layout: Layout, data: np.ndarray, out: _Collector) -> None:
    """Warn when NCR and ED look swapped: edema surrounds the core, so ED should make up
    most of the tumor's outer surface. Labelled with the other convention (MSD 1 ED 2 NET vs
    BraTS 1 NCR 2 ED, the same values), the "NCR" label forms the surface instead."""
    to_disk = {dst: src for src, dst in TO_BRATS2021[layout].items()}
    ed_value, ncr_value = to_disk[ED], to_disk[NCR]
    tumor = data != 0
    box = nonzero_box(tumor[None], margin=1)
    tumor, sub = tumor[box], data[box]
    surface = tumor & ~ndimage.binary_erosion(tumor, border_value=0)
    n_ed, n_ncr = int(np.count_nonzero(sub == ed_value)), int(np.count_nonzero(sub == ncr_value))
    if min(n_ed, n_ncr) < LABEL_ORDER_MIN_VOXELS:
        return
    ed_surface = int(np.count_nonzero(surface & (sub == ed_value)))
    ncr_surface = int(np.count_nonzero(surface & (sub == ncr_value)))
    if ncr_surface > 3 * ed_surface:
        out.warning(
            "label-order",
            f"label {ncr_value} (necrotic/non-enhancing core) forms most of the tumor's outer "
            f"surface, not label {ed_value} (edema): check that the two are not swapped "
            f"({_LAYOUT_NAMES[layout]} expected)",
        )


def _label_expected(case: Case) -> bool:
    """Whether a case of this layout should come with a label on its own evidence."""
    if case.layout is Layout.MSD:
        first = next(iter(case.images.values()), None)
        return first is not None and first.path.parent.name == "imagesTr"
    return case.label is not None


def check_case(case: Case, *, expect_label: bool | None = None) -> list[Problem]:
    """Every problem of one case, reading each file's voxel data once.

    ``expect_label``: whether a missing label is an error. None decides from the case alone
    (MSD: cases under imagesTr; BraTS folders: never, since inference sets have no labels);
    ``check_dataset`` passes True for BraTS folders when any case of the site has a label.
    """
    out = _Collector(case.case_id)
    if expect_label is None:
        expect_label = _label_expected(case)
    for m in case.missing:
        expected = (
            f"{case.case_id}{FILE_KEYS[case.layout][m]}.nii.gz" if case.layout in FILE_KEYS else m
        )
        out.error("missing-image", f"{m} image not found (expected {expected} in {case.folder})")
    for m in case.ignored:
        out.warning(
            "absent-but-present",
            f"{m} is declared absent for this site ({SITE_CONFIG_FILE}) but the case has it; "
            f"the file is not read (drop {m} from absent_modalities to use it)",
        )
    for m in case.synthetic:
        out.info("synthetic", f"{m} synthetic, generator {_generator_of(case.images[m].path)}")

    # Headers first: one opened image per distinct file (MSD cases share one 4D file).
    headers: dict[Path, nib.Nifti1Image] = {}
    for m, src in case.images.items():
        if src.path in headers:
            continue
        img = _open(src.path, m if src.channel is None else "4D image", out, "missing-image")
        if img is not None:
            headers[src.path] = img

    # The 3D grid of each modality that opened, and the reference grid (first modality).
    grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
    for m, src in case.images.items():
        img = headers.get(src.path)
        if img is None:
            continue
        shape = tuple(int(s) for s in img.shape)
        if src.channel is not None:
            if len(shape) != 4 or shape[3] != len(MODALITIES):
                if m == MODALITIES[0]:  # one message for the shared 4D file
                    out.error(
                        "bad-dimensions", f"4D image has shape {shape}; expected (X, Y, Z, 4)"
                    )
                continue
            shape = shape[:3]
        elif len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        elif len(shape) != 3:
            out.error("bad-dimensions", f"{m} has shape {shape}; expected a 3D volume")
            continue
        grids[m] = (shape, np.asarray(img.affine))
    ref_name = next(iter(grids), None)
    if ref_name is not None:
        ref_shape, ref_affine = grids[ref_name]
        for m, (shape, affine) in grids.items():
            if m != ref_name:
                _compare_grid(m, shape, affine, ref_name, ref_shape, ref_affine, out)

    label_img: nib.Nifti1Image | None = None
    if case.label is not None:
        label_img = _open(case.label, "label", out, "missing-label")
    elif expect_label:
        out.error("missing-label", "label map not found")
    if label_img is not None:
        lshape = tuple(int(s) for s in label_img.shape)
        if len(lshape) == 4 and lshape[3] == 1:
            lshape = lshape[:3]
        if len(lshape) != 3:
            out.error("bad-dimensions", f"label has shape {lshape}; expected a 3D volume")
            label_img = None
        elif ref_name is not None:
            ref_shape, ref_affine = grids[ref_name]
            _compare_grid(
                "label", lshape, np.asarray(label_img.affine), ref_name, ref_shape, ref_affine, out
            )

    # Voxel data: each file read once, dropped before the next one is read.
    for path, img in headers.items():
        modalities = [m for m, src in case.images.items() if src.path == path and m in grids]
        if not modalities:
            continue
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel raises many types for truncated/corrupt data
            out.error("unreadable-image", f"{'/'.join(modalities)}: data cannot be read ({exc})")
            continue
        for m in modalities:
            channel = case.images[m].channel
            vol = data[..., channel] if channel is not None else data.reshape(grids[m][0])
            _check_intensities(m, vol, out)
        del data
    if label_img is not None:
        try:
            ldata = np.asanyarray(label_img.dataobj)
        except Exception as exc:
            out.error("unreadable-label", f"label: data cannot be read ({exc})")
        else:
            _check_label(case.layout, ldata, out)
    return out.problems


def _generator_of(path: Path) -> str:
    """The generator hash16 in a synthetic image's header mark, or "unknown"."""
    try:
        mark = synthetic_generator(path)
    except FedsegError:
        return "unknown (unreadable header)"
    return mark[1] if mark is not None else "unknown (no fedseg mark in the header)"


def site_notes(root: Path, cases: list[Case]) -> tuple[str, ...]:
    """One line per modality the site at ``root`` declares absent (not one per case), saying
    how many of its ``cases`` a generator completed and with which generator(s)."""
    notes = []
    for m in declared_absent(root):
        line = f"{m} declared absent for this site ({SITE_CONFIG_FILE})"
        completed = [c for c in cases if m in c.synthetic]
        if completed:
            gens = ", ".join(sorted({_generator_of(c.images[m].path) for c in completed}))
            line += f"; {len(completed)} of {len(cases)} cases completed by generator {gens}"
        notes.append(line)
    return tuple(notes)


def _check_one(job: tuple[Case, bool]) -> list[Problem]:
    case, expect_label = job
    return check_case(case, expect_label=expect_label)


def iter_checks(cases: list[Case], jobs: int = 1) -> Iterator[CaseReport]:
    """Check ``cases`` in order, yielding each report as it is done (streaming).

    ``jobs`` > 1 checks that many cases at once in worker processes (gzip decompression
    dominates the time); memory grows to ``jobs`` cases, never the whole site.
    """
    labelled_site = any(c.label is not None for c in cases)
    work = [
        (c, _label_expected(c) or (c.layout is not Layout.MSD and labelled_site)) for c in cases
    ]
    seen: set[str] = set()
    with ExitStack() as stack:
        if jobs > 1 and len(cases) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs))
            results: Iterator[list[Problem]] = pool.map(_check_one, work)
        else:
            results = map(_check_one, work)
        for case, problems in zip(cases, results, strict=True):
            if case.case_id in seen:
                problems.insert(
                    0,
                    Problem(
                        case_id=case.case_id,
                        severity=Severity.ERROR,
                        code="duplicate-id",
                        message=f"another case is also named {case.case_id}; rename one folder",
                    ),
                )
            seen.add(case.case_id)
            yield CaseReport(case_id=case.case_id, problems=tuple(problems))


def check_dataset(root: Path, layout: Layout | None = None, jobs: int = 1) -> DatasetReport:
    """Check every case under ``root`` (see ``discover_cases``); streams one case at a time.

    In a BraTS folder where any case has a label, a case without one is an error.
    """
    cases = discover_cases(Path(root), layout)
    reports = iter_checks(cases, jobs)
    return DatasetReport.from_cases(Path(root), cases[0].layout, reports, site_notes(root, cases))
