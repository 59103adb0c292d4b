"""Case discovery and loading for the three layouts (BraTS 2017-2021, BraTS 2023+, MSD Task01).

A case is four co-registered MRI volumes in ``MODALITIES`` order (T1, T1Gd, T2, FLAIR) and,
for training, a label map. Loaded labels are always converted to BraTS 2021 values.

Missing modalities are of two kinds. A site may declare in ``<data>/fedseg_site.yaml``
(``data.site_config``) the modalities it never acquires: discovery lists them in
``Case.absent`` and ``load_case`` gives them as all-zero channels, so a network still takes
four channels. Any other gap is ``Case.missing``: an error everywhere (check, split, load).

A generator-made image (``fedseg complete``, ``fedseg sample``) is an ordinary file named
``<case><key>.syn.nii.gz`` (``synthetic_image_path``) whose header ``descrip`` reads
``fedseg synthetic <modality> gen <hash16>`` (``write_synthetic_image``,
``synthetic_generator``); discovery takes it for the modality and lists it in
``Case.synthetic``, unless a real file of the modality is there (the real file wins). A
declared-absent modality completed so is no longer absent.

A label-only phantom folder (``fedseg data synth --labels-only``: ``<case>_seg.nii.gz`` and
``<case>_brain.nii.gz``, no image) is not a site: ``label_only_cases`` lists it, and
``discover_cases`` refuses it in one line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
    #: Declared-absent modalities that have a real file anyway: not read (all of a site's
    #: cases look alike to training); ``fedseg data check`` warns ``absent-but-present``.
    ignored: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """No accidental gap (declared-absent modalities do not count)."""
        return not self.missing

    @property
    def present(self) -> tuple[str, ...]:
        """The modalities with an image (real or synthetic), in MODALITIES order."""
        return tuple(m for m in MODALITIES if m in self.images)

    @property
    def real(self) -> tuple[str, ...]:
        """The modalities with an acquired (not generator-made) image, in MODALITIES order:
        what a generator may learn from."""
        return tuple(m for m in self.present if m not in self.synthetic)

    @property
    def lacking(self) -> tuple[str, ...]:
        """The modalities without an image, declared absent or missing, in MODALITIES order."""
        return tuple(m for m in MODALITIES if m not in self.images)


@dataclass
class CaseVolumes:
    """A loaded case: ``image`` (4, X, Y, Z) float32 in MODALITIES order, ``label`` (X, Y, Z)
    uint8 in BraTS 2021 values or None, the affine of the first present modality, spacing in
    mm. ``present``: the modalities whose channel holds data (the others are all zero: the
    site declared them absent)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    present: tuple[str, ...] = MODALITIES
    spacing: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.spacing = nifti.spacing_of(self.affine)


def _strip_suffix(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _folder_case(folder: Path, layout: Layout, absent: Sequence[str] = ()) -> Case | None:
    """Read a BraTS-style case folder; None if no file of ``layout`` is in it. ``absent``:
    the modalities the site declares it never acquires."""
    keys = FILE_KEYS[layout]
    found: dict[str, Path] = {}
    made: dict[str, Path] = {}  # generator-made images (``<case><key>.syn.nii.gz``)
    case_id = folder.name
    for f in sorted(folder.iterdir()):
        stem = _strip_suffix(f.name)
        if stem is None or f.name.startswith("."):  # macOS "._x_t1.nii.gz" resource forks
            continue
        synthetic = stem.endswith(SYNTHETIC_MARK)
        stem = stem.removesuffix(SYNTHETIC_MARK)
        into = made if synthetic else found
        for key, suffix in keys.items():
            if stem.endswith(suffix) and key not in into and not (synthetic and key == "seg"):
                into[key] = f
                case_id = stem[: -len(suffix)] or folder.name
    if not found and not made:
        return None
    ignored = tuple(m for m in MODALITIES if m in absent and m in found)
    images: dict[str, ImageSource] = {}
    for m in MODALITIES:
        if m in found and m not in absent:
            images[m] = ImageSource(found[m])
        elif m in made:  # a real file wins; a declared-absent modality may be completed
            images[m] = ImageSource(made[m])
    lacking = [m for m in MODALITIES if m not in images]
    return Case(
        case_id,
        layout,
        images,
        found.get("seg"),
        missing=tuple(m for m in lacking if m not in absent),
        folder=folder,
        absent=tuple(m for m in lacking if m in absent),
        synthetic=tuple(m for m in images if images[m].path == made.get(m)),
        ignored=ignored,
    )


def detect_layout(folder: Path) -> Layout | None:
    """Guess the layout of a case folder or a data set root from its file names."""
    if (folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir():
        return Layout.MSD
    candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())[:20]]
    for cand in candidates:
        stems = (_strip_suffix(p.name) for p in cand.iterdir())
        names = [n.removesuffix(SYNTHETIC_MARK) for n in stems if n and n[0] != "."]
        for layout in (Layout.BRATS2023, Layout.BRATS2021):
            keys = FILE_KEYS[layout].values()
            if any(n.endswith(k) for n in names for k in keys):
                return layout
    return None


def _msd_cases(root: Path, absent: Sequence[str] = ()) -> list[Case]:
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
            images = {m: ImageSource(f, MSD_CHANNELS[m]) for m in MODALITIES if m not in absent}
            declared = tuple(absent)  # a 4D file holds every channel: the absent are ignored
            cases.append(
                Case(stem, Layout.MSD, images, label, (), root, absent=declared, ignored=declared)
            )
    return cases


def declared_absent(root: Path) -> tuple[str, ...]:
    """The modalities the site at ``root`` declares it never acquires (its
    ``fedseg_site.yaml``; for one case folder without one, its parent's)."""
    from fedseg.data.site_config import SITE_CONFIG_FILE, read_site_config  # imports MODALITIES

    root = Path(root)
    in_site = not (root / SITE_CONFIG_FILE).is_file() and (root.parent / SITE_CONFIG_FILE).is_file()
    layout = detect_layout(root) if in_site and root.is_dir() else None
    if layout is not None and layout in FILE_KEYS and _folder_case(root, layout) is not None:
        root = root.parent  # a case folder inside a site that declares its absences
    return tuple(read_site_config(root).absent_modalities)


def discover_cases(root: Path, layout: Layout | None = None) -> list[Case]:
    """All cases under ``root`` (a data set folder, or one case folder), sorted by id.

    Folders are read without loading any image data, so this is cheap for 1,000s of cases.
    The site's ``fedseg_site.yaml`` is read once (``declared_absent``).
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
    absent = declared_absent(root)
    if layout is Layout.MSD:
        cases = _msd_cases(root, absent)
    else:
        single = _folder_case(root, layout, absent)
        if single is not None:
            cases = [single]
        else:
            folders = [d for d in sorted(root.iterdir()) if d.is_dir()]
            cases = [c for d in folders if (c := _folder_case(d, layout, absent))]
    if not cases:
        raise FedsegError(f"no {layout.value} cases found in {root}")
    if not any(c.images for c in cases) and label_only_cases(root):
        raise FedsegError(
            f"{root} holds label maps and brain masks without images (a `fedseg data synth "
            "--labels-only` folder): give it to `fedseg sample --labels`, not as a site"
        )
    return sorted((replace(c, root=root) for c in cases), key=lambda c: c.case_id)


@dataclass(frozen=True)
class LabelOnlyCase:
    """A phantom label map that belongs to no patient: its ``label`` (BraTS 2021 values) and
    ``brain`` mask files (``fedseg data synth --labels-only``; the input of ``fedseg sample``)."""

    case_id: str
    label: Path
    brain: Path


def label_only_cases(root: Path) -> list[LabelOnlyCase]:
    """The label-only cases under ``root`` (one folder per case, or a site's folders of them:
    ``<case>/<case>_seg.nii.gz`` with ``<case>/<case>_brain.nii.gz``), sorted by id; a case
    folder lacking either file is left out."""
    root = Path(root)
    keys = FILE_KEYS[Layout.BRATS2021]
    found: dict[str, LabelOnlyCase] = {}
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    for d in folders:
        for f in sorted(d.iterdir()):
            stem = _strip_suffix(f.name)
            if stem is None or f.name.startswith(".") or not stem.endswith(BRAIN_KEY):
                continue
            case_id = stem.removesuffix(BRAIN_KEY)
            label = next(
                (p for s in NIFTI_SUFFIXES if (p := d / f"{case_id}{keys['seg']}{s}").is_file()),
                None,
            )
            if label is not None and case_id not in found:
                found[case_id] = LabelOnlyCase(case_id, label, f)
    return [found[c] for c in sorted(found)]


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
    (an MSD 4D file holds all), filled into one array so a case never sits in memory twice.
    A modality without an image (declared absent) stays an all-zero channel."""
    files: dict[Path, np.ndarray] = {}
    image: np.ndarray | None = None
    first = case.present[0]
    for m in case.present:
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
            image = np.zeros((len(MODALITIES), *vol.shape), dtype=np.float32)
        elif vol.shape != image.shape[1:]:
            raise FedsegError(
                f"case {case.case_id}: {m} has shape {vol.shape}, {first} has "
                f"{image.shape[1:]}; co-register them first (fedseg intake preprocess)"
            )
        image[MODALITIES.index(m)] = vol
        del vol
    assert image is not None
    return image


def load_case(case: Case, *, with_label: bool = True) -> CaseVolumes:
    """Load a case into memory; labels converted to BraTS 2021 values. A declared-absent
    modality is an all-zero channel (``CaseVolumes.present`` lacks it); a missing one, or a
    case without any image, is an error."""
    if case.missing:
        raise FedsegError(
            f"case {case.case_id}: missing modalities {', '.join(case.missing)}; "
            "run `fedseg data check` on the folder"
        )
    if not case.present:
        raise FedsegError(f"case {case.case_id}: no image; run `fedseg data check` on the folder")
    first = case.images[case.present[0]]
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
    return CaseVolumes(case.case_id, image, label, affine, case.present)


def require_all_modalities(case: Case) -> None:
    """Refuse to segment a case that lacks a modality: a segmentation model reads all four,
    and a zero channel it never met gives a silently worse label map. One line saying how
    to fill the gap (``fedseg segment --generator`` completes the case before segmenting)."""
    if case.missing:
        raise FedsegError(
            f"case {case.case_id} in {case.folder}: missing modalities "
            f"{', '.join(case.missing)}; all four of T1, T1Gd, T2, FLAIR are needed (or give "
            "--generator to complete the case first)"
        )
    if case.absent:
        raise FedsegError(
            f"case {case.case_id} lacks {', '.join(case.absent)} (declared absent in its "
            "site's fedseg_site.yaml); give --generator or complete it with `fedseg complete`"
        )


def as_absent(case: Case) -> Case:
    """``case`` with its missing modalities counted as absent (zero channels on loading):
    for a caller that completes them (``fedseg segment --generator``)."""
    lacking = set(case.missing) | set(case.absent)
    return replace(case, missing=(), absent=tuple(m for m in MODALITIES if m in lacking))


def synthetic_image_path(case: Case, modality: str) -> Path:
    """Where a generator-made image of ``modality`` goes: next to the case's real files,
    named ``<case><key>.syn.nii.gz`` in the case's own layout (BraTS 2017-2021 or 2023)."""
    if modality not in MODALITIES:
        raise FedsegError(f"unknown modality {modality!r}; use {', '.join(MODALITIES)}")
    if case.layout not in FILE_KEYS or case.folder is None:
        raise FedsegError(
            f"case {case.case_id}: a synthetic image is written next to a BraTS case's files; "
            f"a {case.layout.value} case has no such folder (convert it to BraTS folders first)"
        )
    key = FILE_KEYS[case.layout][modality]
    return case.folder / f"{case.case_id}{key}{SYNTHETIC_MARK}.nii.gz"


#: The header ``descrip`` of a generator-made image: ``fedseg synthetic <modality> gen <hash16>``.
SYNTHETIC_DESCRIP = "fedseg synthetic {modality} gen {generator}"
_SYNTHETIC_DESCRIP_RE = re.compile(r"^fedseg synthetic (\w+) gen ([0-9a-f]+)$")


def write_synthetic_image(
    path: Path, volume: np.ndarray, affine: np.ndarray, modality: str, generator: str
) -> Path:
    """Write a generator-made image (X, Y, Z) to ``path`` (``synthetic_image_path``) with the
    header mark naming ``modality`` and the generator (the first 16 hex digits of its hash)."""
    if not str(path).endswith(f"{SYNTHETIC_MARK}.nii.gz"):
        raise FedsegError(f"{path}: a synthetic image's name ends in {SYNTHETIC_MARK}.nii.gz")
    mark = SYNTHETIC_DESCRIP.format(modality=modality, generator=generator[:16])
    nifti.save(Path(path), volume, affine, descrip=mark)
    return Path(path)


def synthetic_generator(path: Path) -> tuple[str, str] | None:
    """(modality, generator hash16) from the header mark of the image at ``path``, or None
    when the header holds no fedseg mark."""
    found = _SYNTHETIC_DESCRIP_RE.match(nifti.read_descrip(path))
    return (found.group(1), found.group(2)) if found else None


def write_case(
    out_dir: Path,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray | None,
    affine: np.ndarray,
    modalities: Sequence[str] = MODALITIES,
) -> Path:
    """Write a case in the BraTS 2021 layout: ``out_dir/<id>/<id>_{t1,t1ce,t2,flair,seg}``.

    ``image`` is (4, X, Y, Z) in MODALITIES order; ``label`` in BraTS 2021 values;
    ``modalities``: the channels to write (a site's absent ones are left out).
    Returns the case folder.
    """
    folder = Path(out_dir) / case_id
    keys = FILE_KEYS[Layout.BRATS2021]
    for i, m in enumerate(MODALITIES):
        if m in modalities:
            nifti.save(folder / f"{case_id}{keys[m]}.nii.gz", image[i], affine)
    if label is not None:
        nifti.save(folder / f"{case_id}{keys['seg']}.nii.gz", label, affine, label=True)
    return folder
