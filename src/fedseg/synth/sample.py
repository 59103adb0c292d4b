"""A releasable synthetic data set: full BraTS 2021 cases whose every image a trained
generator drew from phantom label maps (nobody's: ``fedseg data synth --labels-only``).

Input: a folder holding label-only cases, ``<case>/<case>_seg.nii.gz`` with the brain mask
``<case>/<case>_brain.nii.gz`` beside it (``data.cases.BRAIN_KEY``), at any depth (a ``data
synth`` root with site folders works). A label map with images beside it is a site's case,
its label map a patient's: refused, so a released set holds no patient's label map.

Output ``SET/``: ``<case>/<case>_<m>.syn.nii.gz`` for the four modalities (header-marked,
``synth.complete.write_synthetic_image``), ``<case>/<case>_seg.nii.gz`` copied byte for byte,
and ``provenance.yaml``: the generator's weights hash, run and round, the label source, the
seed and the cases drawn.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from fedseg import __version__
from fedseg.data import nifti
from fedseg.data.cases import (
    BRAIN_KEY,
    FILE_KEYS,
    MODALITIES,
    SYNTHETIC_MARK,
    LabelOnlyCase,
    label_only_cases,
    write_synthetic_image,
)
from fedseg.data.labels import Layout, to_brats2021
from fedseg.errors import FedsegError
from fedseg.model.generator_file import GeneratorFile
from fedseg.synth.complete import check_trained

PROVENANCE_FILE = "provenance.yaml"
_SEG = FILE_KEYS[Layout.BRATS2021]["seg"]


def find_label_cases(root: Path) -> list[LabelOnlyCase]:
    """The phantom label maps under ``root`` (``data.cases.label_only_cases``); one line
    when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise FedsegError(f"{root}: not a folder; give the folder of phantom label maps")
    found = label_only_cases(root)
    if not found:
        raise FedsegError(
            f"no label maps (<case>/<case>_seg.nii.gz) under {root}; make phantoms with "
            "`fedseg data synth OUT --labels-only`"
        )
    return found


def _brain_of(lc: LabelOnlyCase, label: np.ndarray) -> np.ndarray:
    if lc.brain is None:
        raise FedsegError(
            f"{lc.label}: no brain mask ({lc.case_id}{BRAIN_KEY}.nii.gz) beside it; make "
            "phantoms with `fedseg data synth OUT --labels-only`"
        )
    return (nifti.load_array(lc.brain, dtype=np.uint8) > 0) | (label > 0)


def choose_cases(cases: list[LabelOnlyCase], n: int | None, seed: int) -> list[LabelOnlyCase]:
    """``n`` of ``cases`` drawn without replacement with ``seed`` (all when None), in id order."""
    if n is None or n == len(cases):
        return list(cases)
    if n > len(cases):
        raise FedsegError(
            f"--cases {n}: only {len(cases)} label maps there; make more phantoms "
            "(fedseg data synth --labels-only --cases-per-site) or ask for fewer"
        )
    pick = np.random.default_rng(seed).choice(len(cases), size=n, replace=False)
    return [cases[i] for i in sorted(pick)]


@dataclass
class SampleResult:
    out: Path
    cases: list[str]
    provenance: Path


def check_sample_output(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FedsegError(f"{out} exists and is not empty; give a new --out folder")
    return out


def provenance(
    gf: GeneratorFile, labels: Path, cases: list[LabelOnlyCase], seed: int, generator: Path | None
) -> dict[str, object]:
    """What ``provenance.yaml`` records (plain types)."""
    return {
        "format": "fedseg-synthetic-set",
        "fedseg": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": {
            "file": str(generator) if generator is not None else None,
            "weights_hash": gf.weights_hash,
            "run": gf.meta.get("run"),  # the coordinator's model meta: run, model_round, plan
            "round": gf.meta.get("model_round"),
            "trained": list(gf.trained),
            "meta": dict(gf.meta),
        },
        "labels": {"source": str(Path(labels).resolve()), "kind": "phantom label maps"},
        "seed": seed,
        "modalities": list(MODALITIES),
        "synthetic": "every image; label maps copied from the source",
        "cases": {c.case_id: str(c.label.resolve()) for c in cases},
    }


def sample_dataset(
    gf: GeneratorFile,
    labels: Path,
    out: Path,
    *,
    n: int | None = None,
    seed: int = 0,
    generator: Path | None = None,
    on_case: Callable[[str], None] | None = None,
) -> SampleResult:
    """Render all four modalities for ``n`` label maps of ``labels`` into ``out`` (see the
    module docstring); refuses a generator whose banks are not all trained."""
    from fedseg.synth.render import render_volume

    check_trained(gf, MODALITIES)
    out = check_sample_output(out)
    chosen = choose_cases(find_label_cases(labels), n, seed)
    out.mkdir(parents=True, exist_ok=True)
    keys = FILE_KEYS[Layout.BRATS2021]
    for lc in chosen:
        raw = nifti.load_array(lc.label, dtype=np.int32)
        label = to_brats2021(raw, Layout.BRATS2021).astype(np.uint8)
        brain = _brain_of(lc, label)
        affine = np.asarray(nifti.load_header(lc.label).affine)
        folder = out / lc.case_id
        for m in MODALITIES:
            vol = render_volume(gf, label, brain, m)
            path = folder / f"{lc.case_id}{keys[m]}{SYNTHETIC_MARK}.nii.gz"
            write_synthetic_image(path, vol, affine, m, gf.weights_hash)
        suffix = lc.label.name[len(lc.case_id) + len(_SEG) :]
        shutil.copyfile(lc.label, folder / f"{lc.case_id}{_SEG}{suffix}")
        if on_case is not None:
            on_case(lc.case_id)
    prov = out / PROVENANCE_FILE
    prov.write_text(
        yaml.safe_dump(provenance(gf, labels, chosen, seed, generator), sort_keys=False)
    )
    return SampleResult(out, [c.case_id for c in chosen], prov)
