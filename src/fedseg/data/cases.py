"""Case discovery and loading for the three layouts (BraTS 2017-2021, BraTS 2023+, MSD Task01).

A case is four co-registered MRI volumes in ``MODALITIES`` order (T1, T1Gd, T2, FLAIR) and,
for training, a label map. Loaded labels are always converted to BraTS 2021 values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fedseg.data import nifti
from fedseg.data.labels import Layout, to_brats2021
from fedseg.errors import FedsegError

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: File-name suffix (after the case id) of each modality and of the label, per folder layout.
FILE_KEYS: dict[Layout, dict[str, str]] = {
    Layout.BRATS2021: {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    Layout.BRATS2023: {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
#: MSD Task01 stores one 4D image with channels FLAIR, T1w, T1gd, T2w.
MSD_CHANNELS: dict[str, int] = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
#: A generator-made image is named ``<case><key><SYNTHETIC_MARK>.nii.gz`` (e.g.
#: ``BraTS_001_flair.syn.nii.gz``) and marked in its header's ``descrip``; discovery takes it
#: for the modality (``Case.synthetic`` lists it) unless a real file of the modality exists.
SYNTHETIC_MARK = ".syn"
#: A label-only phantom case (``fedseg data synth --labels-only``) has its brain mask in
#: ``<case><BRAIN_KEY>.nii.gz`` next to its label map.
BRAIN_KEY = "_brain"


@dataclass(frozen=True)
class ImageSource:
    """Where one modality lives: a file, and a channel index for 4D files."""

    path: Path
    channel: int | None = None


@dataclass(frozen=True)
class Case:
    """One case on disk. ``images`` lacks the modalities that were not found: ``absent``
    the ones its site declared it never acquires (``data.site_config``), ``missing`` the
    others (an error). ``synthetic``: modalities whose image is generator-made.

    ``folder`` holds the case's files; ``root`` is the data folder it was discovered in (the
    site's folder, where the site keeps its own files), None for a case made from files.
    """

    case_id: str
    layout: Layout
    images: dict[str, ImageSource]
    label: Path | None = None
    missing: tuple[str, ...] = ()
    folder: Path | None = None
    root: Path | None = None
    absent: tuple[str, ...] = ()
    synthetic: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """No accidental gap (declared-absent modalities do not count)."""
        return not self.missing

    @property
    def present(self) -> tuple[str, ...]:
        """The modalities with an image (real or synthetic), in MODALITIES order."""
        return tuple(m for m in MODALITIES if m in self.images)


@dataclass
class CaseVolumes:
    """A loaded case: ``image`` (4, X, Y, Z) float32 in MODALITIES order, ``label`` (X, Y, Z)
    uint8 in BraTS 2021 values or None, the affine of the first modality, spacing in mm."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.spacing = nifti.spacing_of(self.affine)


def _strip_suffix(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _folder_case(folder: Path, layout: Layout) -> Case | None:
    """Read a BraTS-style case folder; None if no file of ``layout`` is in it."""
    keys = FILE_KEYS[layout]
    found: dict[str, Path] = {}
    case_id = folder.name
    for f in sorted(folder.iterdir()):
        stem = _strip_suffix(f.name)
        if stem is None or f.name.startswith("."):  # macOS "._x_t1.nii.gz" resource forks
            continue
        for key, suffix in keys.items():
            if stem.endswith(suffix) and key not in found:
                found[key] = f
                case_id = stem[: -len(suffix)] or folder.name
    if not found:
        return None
    images = {m: ImageSource(found[m]) for m in MODALITIES if m in found}
    missing = tuple(m for m in MODALITIES if m not in found)
    return Case(case_id, layout, images, found.get("seg"), missing, folder)


def detect_layout(folder: Path) -> Layout | None:
    """Guess the layout of a case folder or a data set root from its file names."""
    if (folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir():
        return Layout.MSD
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())[:20]]
    for cand in candidates:
        names = [n for n in (_strip_suffix(p.name) for p in cand.iterdir()) if n and n[0] != "."]
        for layout in (Layout.BRATS2023, Layout.BRATS2021):
            keys = FILE_KEYS[layout].values()
            if any(n.endswith(k) for n in names for k in keys):
                return layout
    return None


def _msd_cases(root: Path) -> list[Case]:
    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", None)):
        d = root / images_dir
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            stem = _strip_suffix(f.name)
            if stem is None or stem.startswith("._"):  # macOS resource forks ship in Task01
                continue
            label = None
            if labels_dir is not None:
                candidate = root / labels_dir / f.name
                label = candidate if candidate.exists() else None
            images = {m: ImageSource(f, MSD_CHANNELS[m]) for m in MODALITIES}
            cases.append(Case(stem, Layout.MSD, images, label, (), root))
    return cases


def discover_cases(root: Path, layout: Layout | None = None) -> list[Case]:
    """All cases under ``root`` (a data set folder, or one case folder), sorted by id.

    Folders are read without loading any image data, so this is cheap for 1,000s of cases.
    """
    root = Path(root)
    if not root.is_dir():
        raise FedsegError(f"{root}: not a folder; give the folder that holds the site's cases")
    layout = layout or detect_layout(root)
    if layout is None:
        raise FedsegError(
            f"no cases found in {root}: expected BraTS folders (<case>/<case>_t1.nii.gz ...), "
            "BraTS 2023 folders (<case>/<case>-t1n.nii.gz ...) or an MSD Task01 folder (imagesTr/)"
        )
    if layout is Layout.MSD:
        cases = _msd_cases(root)
    else:
        single = _folder_case(root, layout)
        if single is not None:
            return [replace(single, root=root)]
        cases = [c for d in sorted(root.iterdir()) if d.is_dir() if (c := _folder_case(d, layout))]
    if not cases:
        raise FedsegError(f"no {layout.value} cases found in {root}")
    return sorted((replace(c, root=root) for c in cases), key=lambda c: c.case_id)


def case_from_files(paths: list[Path], label: Path | None = None) -> Case:
    """A case from four files given in MODALITIES order (T1, T1Gd, T2, FLAIR)."""
    if len(paths) != len(MODALITIES):
        raise FedsegError(f"expected 4 image files in the order T1 T1Gd T2 FLAIR, got {len(paths)}")
    stem = _strip_suffix(Path(paths[0]).name) or Path(paths[0]).stem
    case_id = re.sub(r"[_-](t1|t1n)$", "", stem)
    images = {m: ImageSource(Path(p)) for m, p in zip(MODALITIES, paths, strict=True)}
    return Case(case_id, Layout.BRATS2021, images, label, (), Path(paths[0]).parent)


def _load_modalities(case: Case) -> np.ndarray:
    """The four volumes stacked (4, X, Y, Z) float32 in MODALITIES order, each file read once
    (an MSD 4D file holds all), filled into one array so a case never sits in memory twice."""
    files: dict[Path, np.ndarray] = {}
    image: np.ndarray | None = None
    for i, m in enumerate(MODALITIES):
        src = case.images[m]
        if src.channel is None:
            vol = nifti.load_array(src.path)
        else:
            if src.path not in files:
                files[src.path] = nifti.load_array(src.path, channel=None)
            data = files[src.path]
            if data.ndim != 4 or src.channel >= data.shape[3]:
                raise FedsegError(
                    f"{src.path}: no channel {src.channel} in image of shape {data.shape}"
                )
            vol = data[..., src.channel]
        if image is None:
            image = np.empty((len(MODALITIES), *vol.shape), dtype=np.float32)
        elif vol.shape != image.shape[1:]:
            raise FedsegError(
                f"case {case.case_id}: {m} has shape {vol.shape}, {MODALITIES[0]} has "
                f"{image.shape[1:]}; co-register them first (fedseg intake preprocess)"
            )
        image[i] = vol
        del vol
    assert image is not None
    return image


def load_case(case: Case, *, with_label: bool = True) -> CaseVolumes:
    """Load a complete case into memory; labels converted to BraTS 2021 values."""
    if case.missing:
        raise FedsegError(
            f"case {case.case_id}: missing modalities {', '.join(case.missing)}; "
            "run `fedseg data check` on the folder"
        )
    first = case.images[MODALITIES[0]]
    affine = np.asarray(nifti.load_header(first.path).affine)
    image = _load_modalities(case)
    label = None
    if with_label and case.label is not None:
        raw = nifti.load_array(case.label, dtype=np.int32)
        if raw.shape != image.shape[1:]:
            raise FedsegError(
                f"case {case.case_id}: label shape {raw.shape} differs from image {image.shape[1:]}"
            )
        label = to_brats2021(raw, case.layout)
    return CaseVolumes(case.case_id, image, label, affine)


def write_case(
    out_dir: Path,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray | None,
    affine: np.ndarray,
) -> Path:
    """Write a case in the BraTS 2021 layout: ``out_dir/<id>/<id>_{t1,t1ce,t2,flair,seg}``.

    ``image`` is (4, X, Y, Z) in MODALITIES order; ``label`` in BraTS 2021 values.
    Returns the case folder.
    """
    folder = Path(out_dir) / case_id
    keys = FILE_KEYS[Layout.BRATS2021]
    for i, m in enumerate(MODALITIES):
        nifti.save(folder / f"{case_id}{keys[m]}.nii.gz", image[i], affine)
    if label is not None:
        nifti.save(folder / f"{case_id}{keys['seg']}.nii.gz", label, affine, label=True)
    return folder
