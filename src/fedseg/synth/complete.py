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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.data.cases import (
    MODALITIES,
    Case,
    as_absent,
    load_case,
    synthetic_image_path,
    write_synthetic_image,
)
from fedseg.errors import FedsegError
from fedseg.model.generator_file import GeneratorFile


def case_brain(image: np.ndarray, present: Sequence[str], label: np.ndarray) -> np.ndarray:
    """The brain mask the generator draws in: non-zero voxels of the ``present`` modalities
    of ``image`` (4, X, Y, Z) (skull-stripped data has a zero background), tumour voxels
    included."""
    from fedseg.synth.data import brain_mask

    channels = [MODALITIES.index(m) for m in present]
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
    loaded = load_case(as_absent(case))  # the absent channels zero
    assert loaded.label is not None
    label = loaded.label.astype(np.uint8)
    brain = case_brain(loaded.image, loaded.present, label)
    for m in todo:
        vol = render_volume(gf, label, brain, m)
        written[m] = write_synthetic_image(
            synthetic_image_path(case, m), vol, loaded.affine, m, gf.weights_hash
        )
    return CompletedCase(case.case_id, written, skipped)
