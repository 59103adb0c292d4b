"""Typed configuration of a synthetic multi-site data set: the run (SynthConfig) and the
scanner/population profile of each site (SiteProfile), both drawn from one seed."""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedseg.data.atlas import BRATS_SHAPE
from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError


class BadKind(StrEnum):
    """How a badly annotating site gets its labels wrong, always the same way."""

    ERODED = "eroded"  # every tumor region drawn too small (eroded by a few mm)
    SHIFTED = "shifted"  # the whole label map shifted by a few voxels
    SWAPPED = "swapped"  # necrotic core (1) and edema (2) exchanged
    SCRAMBLE = "scramble"  # every tumor label permuted: NCR->ED->ET->NCR (annotation.SCRAMBLE)


class SiteProfile(BaseModel):
    """One site's scanner and patient population. Intensities are relative to white matter
    in T1 (= 1 before ``intensity_scale``); lengths in mm; ``slice_axis`` is a voxel axis."""

    model_config = ConfigDict(extra="forbid")

    name: str
    intensity_scale: float = Field(gt=0, description="scanner units of white matter")
    modality_scale: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    contrast_gamma: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    bias_strength: float = Field(0.1, ge=0, description="std of the log bias field")
    noise: float = Field(0.03, ge=0, description="Rician noise sigma relative to white matter")
    blur_fwhm_mm: float = Field(0.0, ge=0, description="in-plane point-spread FWHM")
    slice_thickness_mm: float = Field(0.0, ge=0, description="0: isotropic 3D acquisition")
    slice_axis: int = Field(2, ge=0, le=2)
    tumor_radius_mm: float = Field(14.0, gt=0, description="median tumor-core radius")
    tumor_radius_spread: float = Field(0.25, ge=0, description="lognormal sigma of the radius")
    edema_mm: float = Field(12.0, ge=0, description="typical edema extent beyond the core")
    necrosis_prob: float = Field(0.92, ge=0, le=1, description="share of cases with necrosis")
    bad_kind: BadKind | None = None
    bad_shift_vox: tuple[int, int, int] = (0, 0, 0)


#: The most sites one synthetic data set may have (the study federated 71).
MAX_SITES = 1024


class SynthConfig(BaseModel):
    """What `fedseg data synth` generates. ``spacing`` in mm picks the grid: the BraTS
    240x240x155 mm field of view at that voxel size (2 mm -> 120x120x78)."""

    model_config = ConfigDict(extra="forbid")

    sites: int = Field(3, ge=1, le=MAX_SITES)
    cases_per_site: int | list[int] = 8
    seed: int = 0
    spacing: float = Field(2.0, ge=1.0, le=8.0)
    bad_sites: list[int] = Field(default_factory=list, description="1-based site numbers")
    bad_kind: BadKind = BadKind.ERODED
    deformation_mm: float = Field(3.0, ge=0, description="std of the smooth subject warp")
    profiles: list[SiteProfile] | None = Field(None, description="None: drawn from the seed")
    missing: dict[str, list[str]] = Field(
        default_factory=dict,
        description="site name -> modalities it lacks (held back, declared absent)",
    )
    labels_only: bool = Field(False, description="label maps and brain masks only, no image")
    val_cases: dict[str, int] = Field(
        default_factory=dict,
        description="site name -> its validation cases (its split file is written with "
        "exactly that many); the other sites are split on first use",
    )
    partition: dict[str, list[str]] | None = Field(
        None,
        description="site folder name -> its case ids (a challenge partition file, "
        "data.partition.read_partition); None: site1..siteN with cases <site>_000...",
    )
    held_out: int = Field(
        0, ge=0, description="sites drawn by the seed to hold out (synth.yaml held_out)"
    )

    @field_validator("missing")
    @classmethod
    def _known_modalities(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for site, modalities in v.items():
            bad = [m for m in modalities if m not in MODALITIES]
            if bad:
                raise ValueError(
                    f"{site}: unknown modality {bad[0]!r}; use {', '.join(MODALITIES)}"
                )
            if set(modalities) >= set(MODALITIES):
                raise ValueError(f"{site}: a site cannot lack every modality")
            out[site] = sorted(set(modalities), key=MODALITIES.index)
        return out

    @field_validator("cases_per_site")
    @classmethod
    def _positive_counts(cls, v: int | list[int]) -> int | list[int]:
        counts = [v] if isinstance(v, int) else v
        if any(c < 1 for c in counts):
            raise ValueError("cases per site must be at least 1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if self.partition is not None:
            sizes = [len(v) for v in self.partition.values()]
            if len(sizes) != self.sites or sizes != self.case_counts():
                raise ValueError(
                    f"partition has {len(sizes)} sites of {sizes} cases; set sites and "
                    f"cases_per_site from it (synth.sizes.synth_counts)"
                )
        if isinstance(self.cases_per_site, list) and len(self.cases_per_site) != self.sites:
            raise ValueError(
                f"cases_per_site lists {len(self.cases_per_site)} sites, not {self.sites}"
            )
        if self.profiles is not None and len(self.profiles) != self.sites:
            raise ValueError(f"profiles lists {len(self.profiles)} sites, not {self.sites}")
        unknown = sorted(set(self.missing) - set(self.site_names()))
        if unknown:
            raise ValueError(f"missing names {unknown[0]}; the sites are {self.names_hint()}")
        if self.missing and self.labels_only:
            raise ValueError("labels_only writes no image, so no modality can be missing")
        counts = dict(zip(self.site_names(), self.case_counts(), strict=True))
        for site, n in self.val_cases.items():
            if site not in counts:
                raise ValueError(f"val_cases names {site}; the sites are {self.names_hint()}")
            if not 1 <= n < counts[site]:
                raise ValueError(
                    f"val_cases {site}:{n}: {site} has {counts[site]} cases, give it "
                    f"1..{counts[site] - 1} validation cases"
                )
        if self.val_cases and self.labels_only:
            raise ValueError("labels_only writes no labelled case to split")
        if self.held_out >= self.sites:
            raise ValueError(
                f"held_out {self.held_out}: hold out 0..{self.sites - 1} of the {self.sites} "
                f"sites (at least one site must train)"
            )
        return self

    def site_names(self) -> list[str]:
        if self.partition is not None:
            return list(self.partition)
        return [f"site{i + 1}" for i in range(self.sites)]

    def names_hint(self) -> str:
        """``site1..site71`` (first..last site name), for error messages."""
        names = self.site_names()
        return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"

    def case_ids(self, site_index: int) -> list[str]:
        """The case folder names of site ``site_index`` (0-based): the partition's subject
        ids, else ``<site>_000``, ``<site>_001``, ..."""
        site = self.site_names()[site_index]
        if self.partition is not None:
            return list(self.partition[site])
        return [f"{site}_{i:03d}" for i in range(self.case_counts()[site_index])]

    def held_out_sites(self) -> list[str]:
        """The ``held_out`` sites, drawn by the seed (``synth.sizes.held_out_sites``)."""
        from fedseg.data.synth.sizes import held_out_sites

        return held_out_sites(self.site_names(), self.held_out, self.seed)

    def case_counts(self) -> list[int]:
        c = self.cases_per_site
        return [c] * self.sites if isinstance(c, int) else list(c)

    def grid_shape(self) -> tuple[int, int, int]:
        """Voxels per axis covering the 240x240x155 mm BraTS field of view."""
        x, y, z = (math.ceil(n / self.spacing - 1e-6) for n in BRATS_SHAPE)
        return (x, y, z)

    def site_profiles(self) -> list[SiteProfile]:
        """The given profiles, or ones drawn from the seed; bad sites get ``bad_kind``."""
        for s in self.bad_sites:
            if not 1 <= s <= self.sites:
                raise FedsegError(f"--bad-site {s}: sites are numbered 1..{self.sites}")
        profiles = self.profiles or draw_profiles(self.sites, self.seed, self.spacing)
        out = []
        for i, (p, name) in enumerate(zip(profiles, self.site_names(), strict=True)):
            bad = self.bad_kind if (i + 1) in self.bad_sites else p.bad_kind
            update: dict[str, object] = {"bad_kind": bad}
            if self.partition is not None:
                update["name"] = name
            out.append(p.model_copy(update=update))
        return out


def _spread(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """n values covering [lo, hi] in shuffled strata, so that any two sites differ."""
    edges = np.linspace(lo, hi, n + 1)
    vals = edges[:-1] + rng.uniform(0.15, 0.85, n) * (edges[1:] - edges[:-1])
    return rng.permutation(vals)


def draw_profiles(n_sites: int, seed: int, spacing: float) -> list[SiteProfile]:
    """Site profiles from the seed: scanner effects and tumor sizes spread across sites."""
    rng = np.random.default_rng([seed, 0x5173])
    log_scale = _spread(rng, n_sites, math.log(150.0), math.log(3000.0))
    noise = _spread(rng, n_sites, 0.012, 0.07)
    blur = _spread(rng, n_sites, 0.0, 2.5)
    bias = _spread(rng, n_sites, 0.04, 0.3)
    radius = _spread(rng, n_sites, 9.0, 20.0)
    edema = _spread(rng, n_sites, 8.0, 24.0)
    shift = max(2, round(6.0 / spacing))
    profiles = []
    for i in range(n_sites):
        thick = float(rng.choice([0.0, 0.0, 3.0, 5.0]))
        shift_axis = int(rng.integers(3))
        shift_vec = [0, 0, 0]
        shift_vec[shift_axis] = shift * int(rng.choice([-1, 1]))
        profiles.append(
            SiteProfile(
                name=f"site{i + 1}",
                intensity_scale=round(float(math.exp(log_scale[i])), 1),
                modality_scale=tuple(round(float(v), 3) for v in rng.uniform(0.7, 1.4, 4)),
                contrast_gamma=tuple(round(float(v), 3) for v in rng.uniform(0.8, 1.25, 4)),
                bias_strength=round(float(bias[i]), 3),
                noise=round(float(noise[i]), 4),
                blur_fwhm_mm=round(float(blur[i]), 2),
                slice_thickness_mm=thick,
                slice_axis=int(rng.choice([2, 2, 1])),
                tumor_radius_mm=round(float(radius[i]), 1),
                tumor_radius_spread=round(float(rng.uniform(0.15, 0.35)), 3),
                edema_mm=round(float(edema[i]), 1),
                necrosis_prob=round(float(rng.uniform(0.93, 0.98)), 3),
                bad_shift_vox=(shift_vec[0], shift_vec[1], shift_vec[2]),
            )
        )
    return profiles
