"""Completion of a site's cases: the modalities a case lacks, rendered by a trained generator
from the case's own label map and brain mask, written next to the real files.

A completed image is ``<case><key>.syn.nii.gz`` in the case folder (e.g.
``BraTS_001_flair.syn.nii.gz``), on the real files' grid (their affine and shape), float32 in
[0, 1] (the generator's scale; the segmentation recipe z-scores every channel anyway), zero
outside the brain, its header ``descrip`` saying ``fedseg synthetic <m> gen <hash16>``.

The generator is label-driven (as in the paper): the completed image has the case's tumour
where its label map puts it, and a plausible, not the patient's, inner anatomy. So a case
without a label map cannot be completed, nor a modality whose bank no site trained.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from fedseg.data import nifti
from fedseg.data.cases import FILE_KEYS, MODALITIES, SYNTHETIC_MARK, Case
from fedseg.data.labels import Layout, to_brats2021
from fedseg.errors import FedsegError
from fedseg.model.generator_file import GeneratorFile

#: NIfTI ``descrip`` of a generator-made image (the header holds 80 bytes).
DESCRIP = "fedseg synthetic {modality} gen {hash16}"


def synthetic_image_path(case: Case, modality: str) -> Path:
    """Where a completed ``modality`` of ``case`` is written: its case folder, the layout's
    file key followed by ``SYNTHETIC_MARK``."""
    # helper C's data layer adds the same function to data/cases.py; after the merge this
    # module imports it from there (one place for where synthetic files live).
    if case.layout is Layout.MSD or case.folder is None:
        raise FedsegError(
            f"case {case.case_id}: completion writes next to BraTS-layout case folders; "
            "convert MSD data first (fedseg intake) or give a BraTS 2021/2023 folder"
        )
    return case.folder / f"{case.case_id}{FILE_KEYS[case.layout][modality]}{SYNTHETIC_MARK}.nii.gz"


def synthetic_descrip(modality: str, weights_hash: str) -> str:
    """The header mark of a generator-made image of ``modality``."""
    return DESCRIP.format(modality=modality, hash16=weights_hash[:16])


def write_synthetic_image(
    path: Path, image: np.ndarray, affine: np.ndarray, modality: str, weights_hash: str
) -> Path:
    """Write a generator-made volume (float32) with its header mark, atomically (a hidden
    partial file renamed into place, so discovery never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(image, dtype=np.float32), np.asarray(affine, np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header["descrip"] = synthetic_descrip(modality, weights_hash).encode()[:80]
    partial = path.with_name(f".{path.name}.partial.nii.gz")
    nib.save(img, str(partial))
    os.replace(partial, path)
    return path


def read_descrip(path: Path) -> str:
    """The header ``descrip`` of a NIfTI file (empty when unset)."""
    raw = nifti.load_header(path).header["descrip"]
    return bytes(np.asarray(raw).item()).decode(errors="replace").rstrip("\x00").strip()


@dataclass
class PresentImages:
    """The images a case has, loaded: ``image`` (4, X, Y, Z) float32 in MODALITIES order with
    the channels of ``absent`` zero, the grid's ``affine``, and ``present`` per channel."""

    case_id: str
    image: np.ndarray
    affine: np.ndarray
    present: tuple[bool, ...]

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(m for m, p in zip(MODALITIES, self.present, strict=True) if not p)


def load_present_images(case: Case) -> PresentImages:
    """Load the modalities ``case`` has (real or synthetic), the others zero; one line when
    two of its images are on different grids or it has none."""
    if not case.images:
        raise FedsegError(f"case {case.case_id}: no image at all; nothing to complete from")
    image: np.ndarray | None = None
    affine: np.ndarray | None = None
    for i, m in enumerate(MODALITIES):
        src = case.images.get(m)
        if src is None:
            continue
        vol = nifti.load_array(src.path, channel=src.channel)
        if image is None:
            image = np.zeros((len(MODALITIES), *vol.shape), dtype=np.float32)
            affine = np.asarray(nifti.load_header(src.path).affine)
        elif vol.shape != image.shape[1:]:
            raise FedsegError(
                f"case {case.case_id}: {m} has shape {vol.shape}, the other images "
                f"{image.shape[1:]}; co-register them first (fedseg intake preprocess)"
            )
        image[i] = vol
    assert image is not None and affine is not None
    present = tuple(m in case.images for m in MODALITIES)
    return PresentImages(case.case_id, image, affine, present)


def case_brain(image: np.ndarray, present: Sequence[bool], label: np.ndarray) -> np.ndarray:
    """The brain mask the generator draws in: non-zero voxels of the present modalities
    (skull-stripped data has a zero background), tumour voxels included."""
    from fedseg.synth.data import brain_mask

    channels = [i for i, p in enumerate(present) if p]
    return brain_mask(image[channels]) | (label > 0)


def check_trained(gf: GeneratorFile, modalities: Sequence[str]) -> None:
    """Refuse a modality whose bank no site trained (one line)."""
    for m in modalities:
        if m not in gf.trained:
            trained = ", ".join(gf.trained) or "none"
            raise FedsegError(
                f"the generator's {m} bank was never trained (trained: {trained}); no site "
                f"with {m} took part in its run, so it cannot make {m} images"
            )


@dataclass
class CompletedCase:
    case_id: str
    written: dict[str, Path]
    skipped: dict[str, str]


def complete_case(
    gf: GeneratorFile,
    case: Case,
    modalities: Sequence[str],
    *,
    overwrite: bool = False,
) -> CompletedCase:
    """Render each of ``modalities`` for ``case`` from its label map and brain mask and
    write it next to the real files (``synthetic_image_path``). A modality with a real
    image is skipped (said in ``skipped``); an existing completion is refused unless
    ``overwrite``. Refuses a case without a label map and an untrained modality."""
    from fedseg.synth.render import render_volume

    check_trained(gf, modalities)
    if case.label is None:
        raise FedsegError(
            f"case {case.case_id}: no label map; completion draws the image from the case's "
            "label map (the generator is label-driven), so label it first or leave it out"
        )
    todo: list[str] = []
    skipped: dict[str, str] = {}
    for m in modalities:
        src = case.images.get(m)
        if src is not None and m not in case.synthetic:
            skipped[m] = "real image present"
            continue
        path = synthetic_image_path(case, m)
        if path.exists() and not overwrite:
            raise FedsegError(f"{path} exists; give --overwrite to make it again")
        todo.append(m)
    written: dict[str, Path] = {}
    if not todo:
        return CompletedCase(case.case_id, written, skipped)
    loaded = load_present_images(case)
    raw = nifti.load_array(case.label, dtype=np.int32)
    if raw.shape != loaded.image.shape[1:]:
        raise FedsegError(
            f"case {case.case_id}: label shape {raw.shape} differs from the images' "
            f"{loaded.image.shape[1:]}"
        )
    label = to_brats2021(raw, case.layout).astype(np.uint8)
    brain = case_brain(loaded.image, loaded.present, label)
    for m in todo:
        vol = render_volume(gf, label, brain, m)
        written[m] = write_synthetic_image(
            synthetic_image_path(case, m), vol, loaded.affine, m, gf.weights_hash
        )
    return CompletedCase(case.case_id, written, skipped)
