"""Helpers of the tests of the verbs that use a trained generator (complete, sample,
segment --generator): a tiny generator file and copies of a tiny site to change."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedseg.data import nifti
from fedseg.data.cases import BRAIN_KEY, MODALITIES, discover_cases
from fedseg.data.site_config import SITE_CONFIG_FILE
from fedseg.model.generator import GeneratorConfig, new_generator_weights
from fedseg.model.generator_file import GeneratorFile, save_generator

TINY_GENERATOR = GeneratorConfig(base_filters=4, depth=2)


def tiny_generator(
    path: Path, trained: Sequence[str] = MODALITIES, seed: int = 0
) -> tuple[Path, GeneratorFile]:
    """A random generator (identity banks) saved as a generator file."""
    gf = GeneratorFile(
        TINY_GENERATOR,
        new_generator_weights(TINY_GENERATOR, seed),
        trained=list(trained),
        meta={"run": "run-test", "model_round": "3", "plan": "tiny"},  # the coordinator's keys
    )
    return save_generator(path, gf), gf


def site_without(src: Path, dst: Path, modality: str, *, declare: bool = True) -> Path:
    """A copy of site ``src`` whose cases lack ``modality`` (declared absent in its
    fedseg_site.yaml when ``declare``)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".fedseg", "fedseg_split.json"))
    for f in dst.rglob(f"*_{modality}.nii.gz"):
        f.unlink()
    if declare:
        (dst / SITE_CONFIG_FILE).write_text(f"absent_modalities: [{modality}]\n")
    return dst


def phantoms_from(site: Path, dst: Path) -> Path:
    """Label-only cases (``<case>_seg`` + ``<case>_brain``) made from a site's cases, the
    layout of ``fedseg data synth --labels-only``."""
    for case in discover_cases(site):
        assert case.label is not None
        folder = dst / case.case_id
        folder.mkdir(parents=True)
        shutil.copyfile(case.label, folder / case.label.name)
        image = np.stack([nifti.load_array(case.images[m].path) for m in MODALITIES])
        affine = nifti.load_header(case.label).affine
        nifti.save(folder / f"{case.case_id}{BRAIN_KEY}.nii.gz", image.any(0), affine, label=True)
    return dst
