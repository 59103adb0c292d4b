"""Generate synthetic multi-site BraTS data: real anatomy (SRI24), gliomas, per-site scanners.

API for other code and tests:

- ``generate_dataset(out, config, progress=None, workers=1) -> dict[site, list[case folder]]``
  writes ``out/<site>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2021 layout, case
  ids such as ``site1_000``, unique across sites) and ``out/synth.yaml`` (config, site
  profiles, cases). Same config -> identical files; ``read_record(out)`` gives the config back.
- ``synth_case(config, profiles, site_index, case_index) -> SynthCase`` makes one case in
  memory (image, written label, the clean label before a bad site's errors, affine).
- ``read_held_out(out) -> list[str]``: the sites ``--held-out K`` drew (synth.yaml
  ``held_out``), for a benchmark that evaluates on them.

Site and case names: ``site1..siteN`` with cases ``site1_000, ...``; with
``config.partition`` (``--partition FILE.csv``, a FeTS challenge partition) the
institutions ``inst<ID>`` with the subject ids as case names, as ``fedseg data partition``
lays out real cases.
- ``make_tiny_dataset(out, sites=2, cases_per_site=3, seed=0, spacing=4.0)`` is the quick
  fixture for other layers' tests: 60x60x39 voxels, about a second per case.

``config.val_cases`` (``--val-cases site4:2``): those sites get their split file
(``data.splits``) with exactly that many validation cases; the others are split on first use.

``config.missing`` (``--missing site2:flair``): that site's files of the modality are not
written into its folder but to ``out/heldback/<site>/<case>/<case>_<m>.nii.gz`` (outside the
site, the ground truth a completion is measured against), and the site gets a
``fedseg_site.yaml`` declaring the modality absent. ``config.labels_only``
(``--labels-only``): per case only ``<case>_seg.nii.gz`` and ``<case>_brain.nii.gz`` (the
brain mask), phantom label maps that belong to no patient (``data.cases.label_only_cases``
lists them; the input of ``fedseg sample``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from fedseg.data import nifti
from fedseg.data.cases import BRAIN_KEY, FILE_KEYS, MODALITIES, write_case
from fedseg.data.labels import ED, ET, NCR, Layout
from fedseg.data.site_config import SITE_CONFIG_FILE
from fedseg.data.splits import set_validation_cases
from fedseg.data.synth.anatomy import (
    Anatomy,
    atlas_on_grid,
    brain_depth,
    deform_subject,
    push_tissue,
)
from fedseg.data.synth.annotation import corrupt_label
from fedseg.data.synth.config import BadKind, SiteProfile, SynthConfig
from fedseg.data.synth.contrast import synthesize
from fedseg.data.synth.scanner import acquire
from fedseg.data.synth.tumor import TumorPlan, draw_tumor, plan_tumor
from fedseg.errors import FedsegError

SYNTH_YAML = "synth.yaml"
#: synth.yaml's list of held-out site names (``--held-out K``; ``read_held_out``).
HELD_OUT_KEY = "held_out"
#: Where the held-back images of ``config.missing`` go, inside the output folder.
HELDBACK = "heldback"


@dataclass
class SynthCase:
    """One generated case: ``image`` (4, X, Y, Z) float32 in MODALITIES order, ``label``
    as written (BraTS 2021 values), ``clean_label`` before a bad site's errors, the affine,
    the tumor plan and the subject's anatomy (tissue fractions after the mass effect)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    clean_label: np.ndarray
    affine: np.ndarray
    plan: TumorPlan
    anatomy: Anatomy


def synth_case(
    config: SynthConfig, profiles: list[SiteProfile], site_index: int, case_index: int
) -> SynthCase:
    """Generate case ``case_index`` of site ``site_index`` (both 0-based) in memory.

    Each case has its own random stream from (seed, site, case), so a case does not
    depend on how many cases or which workers came before it.
    """
    profile = profiles[site_index]
    rng = np.random.default_rng([config.seed, site_index, case_index])
    atlas = atlas_on_grid(config.spacing, config.grid_shape())
    anat = deform_subject(atlas, rng, config.deformation_mm)
    depth = brain_depth(anat)
    plan = plan_tumor(anat, depth, profile, rng)
    anat = push_tissue(anat, depth, plan.centre_vox, plan.radius_mm, plan.mass_effect)
    clean = draw_tumor(anat, plan, rng)
    images = acquire(synthesize(anat, clean, rng), anat.brain, profile, config.spacing, rng)
    label = corrupt_label(clean, anat.brain, profile, config.spacing)
    name = config.case_ids(site_index)[case_index]
    return SynthCase(name, images, label, clean, anat.affine, plan, anat)


def _write_one(
    config: SynthConfig, profiles: list[SiteProfile], site_index: int, case_index: int, out: Path
) -> tuple[Path, dict[str, float]]:
    case = synth_case(config, profiles, site_index, case_index)
    site = config.site_names()[site_index]
    site_dir = out / site
    keys = FILE_KEYS[Layout.BRATS2021]
    if config.labels_only:
        folder = site_dir / case.case_id
        nifti.save(
            folder / f"{case.case_id}{keys['seg']}.nii.gz", case.label, case.affine, label=True
        )
        brain = case.anatomy.brain.astype(np.uint8)
        nifti.save(folder / f"{case.case_id}{BRAIN_KEY}.nii.gz", brain, case.affine, label=True)
    else:
        held = config.missing.get(site, [])
        kept = [m for m in MODALITIES if m not in held]
        folder = write_case(site_dir, case.case_id, case.image, case.label, case.affine, kept)
        for m in held:
            path = out / HELDBACK / site / case.case_id / f"{case.case_id}{keys[m]}.nii.gz"
            nifti.save(path, case.image[MODALITIES.index(m)], case.affine)
    voxel_cc = config.spacing**3 / 1000.0
    volumes = {
        name: round(float((case.clean_label == v).sum()) * voxel_cc, 2)
        for name, v in (("ncr_cc", NCR), ("ed_cc", ED), ("et_cc", ET))
    }
    return folder, volumes


def prepare_output(out: Path, config: SynthConfig, overwrite: bool = False) -> None:
    """Create ``out``; refuse (or with ``overwrite`` clear) site folders that hold data, and
    their held-back images."""
    out.mkdir(parents=True, exist_ok=True)
    for site in config.site_names():
        for d in (out / site, out / HELDBACK / site):
            if d.exists() and any(d.iterdir()):
                if not overwrite:
                    raise FedsegError(
                        f"{d} already holds data; choose an empty output folder or pass --overwrite"
                    )
                shutil.rmtree(d)


def _declare_absent(out: Path, config: SynthConfig) -> None:
    """Write ``fedseg_site.yaml`` into each site folder of ``config.missing``."""
    for site, absent in config.missing.items():
        (out / site).mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_dump({"absent_modalities": list(absent)}, sort_keys=False)
        (out / site / SITE_CONFIG_FILE).write_text(
            f"# written by `fedseg data synth --missing`\n{doc}"
        )


def _record(
    out: Path, config: SynthConfig, profiles: list[SiteProfile], cases: dict[str, list]
) -> None:
    doc = {
        "config": config.model_dump(mode="json", exclude={"profiles"}),
        "grid_shape": list(config.grid_shape()),
        "profiles": [p.model_dump(mode="json") for p in profiles],
        "cases": cases,
        HELD_OUT_KEY: config.held_out_sites(),
    }
    (out / SYNTH_YAML).write_text(yaml.safe_dump(doc, sort_keys=False))


def read_record(out: Path) -> SynthConfig:
    """The config, with its site profiles, that wrote the data set in ``out`` (synth.yaml):
    ``generate_dataset(new_out, read_record(out))`` repeats it file for file."""
    path = Path(out) / SYNTH_YAML
    if not path.is_file():
        raise FedsegError(f"{path}: not found; give a folder written by `fedseg data synth`")
    try:
        doc = yaml.safe_load(path.read_text())
        profiles = [SiteProfile(**p) for p in doc["profiles"]]
        return SynthConfig(**doc["config"], profiles=profiles)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise FedsegError(f"{path}: not a valid synth record ({exc}); regenerate it") from None


def read_held_out(out: Path) -> list[str]:
    """The held-out site names recorded in ``out/synth.yaml`` (``--held-out K``; [] when
    none): a benchmark evaluates on them, and no plan lists them."""
    path = Path(out) / SYNTH_YAML
    config = read_record(out)
    doc = yaml.safe_load(path.read_text())
    names = doc.get(HELD_OUT_KEY) or []
    if not isinstance(names, list) or not set(map(str, names)) <= set(config.site_names()):
        raise FedsegError(
            f"{path}: {HELD_OUT_KEY} must list site names of the data set, not {names!r}; "
            f"regenerate it with `fedseg data synth --held-out K`"
        )
    return [str(n) for n in names]


def generate_dataset(
    out: Path,
    config: SynthConfig,
    progress: Callable[[str], None] | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
) -> dict[str, list[Path]]:
    """Write the data set (see the module docstring); ``progress(case_id)`` after each case.

    Returns site name -> case folders in order.
    """
    out = Path(out)
    profiles = config.site_profiles()
    prepare_output(out, config, overwrite)
    _declare_absent(out, config)
    sites = config.site_names()
    jobs = [(s, c) for s, n in enumerate(config.case_counts()) for c in range(n)]
    _record(out, config, profiles, {})
    result: dict[str, list[Path]] = {s: [] for s in sites}
    summary: dict[str, list] = {s: [] for s in sites}

    def done(job: tuple[int, int], res: tuple[Path, dict[str, float]]) -> None:
        folder, volumes = res
        site = sites[job[0]]
        result[site].append(folder)
        summary[site].append({"case": folder.name, **volumes})
        if progress is not None:
            progress(folder.name)

    if workers <= 1:
        for job in jobs:
            done(job, _write_one(config, profiles, job[0], job[1], out))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_one, config, profiles, s, c, out) for s, c in jobs]
            for job, fut in zip(jobs, futures, strict=True):
                done(job, fut.result())
    _record(out, config, profiles, summary)
    for site, n_val in config.val_cases.items():
        set_validation_cases(out / site, n_val)
    return result


def make_tiny_dataset(
    out: Path,
    sites: int = 2,
    cases_per_site: int = 3,
    seed: int = 0,
    spacing: float = 4.0,
    bad_sites: tuple[int, ...] = (),
    bad_kind: BadKind = BadKind.ERODED,
) -> dict[str, list[Path]]:
    """A small data set for tests of other layers: 4 mm voxels (60x60x39), seconds in all."""
    config = SynthConfig(
        sites=sites,
        cases_per_site=cases_per_site,
        seed=seed,
        spacing=spacing,
        bad_sites=list(bad_sites),
        bad_kind=bad_kind,
    )
    return generate_dataset(out, config)
