"""Glioma-like tumors: an irregular core of merged lobes seeded in white matter, a
necrotic centre (1) inside an enhancing rim (4), and edema (2) spreading along white matter.
Labels in BraTS 2021 values; lengths in mm."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from fedseg.data.labels import ED, ET, NCR
from fedseg.data.synth.anatomy import Anatomy
from fedseg.data.synth.config import SiteProfile
from fedseg.data.synth.fields import smooth_noise


@dataclass(frozen=True)
class TumorPlan:
    """Where and how big: centre in voxels (3,), core radius, edema extent and enhancing-rim
    thickness in mm (a rim thicker than the core means no necrosis), share of the rim that
    enhances, and mass-effect strength (tissue displacement at the edge / radius)."""

    centre_vox: np.ndarray
    radius_mm: float
    edema_mm: float
    rim_mm: float
    enhancing_share: float
    mass_effect: float


def plan_tumor(anat: Anatomy, profile: SiteProfile, rng: np.random.Generator) -> TumorPlan:
    """Draw a tumor's size from the site's distribution and seed it deep in white matter."""
    sp = anat.spacing
    radius = profile.tumor_radius_mm * float(np.exp(rng.normal(0.0, profile.tumor_radius_spread)))
    radius = float(np.clip(radius, max(6.0, 2.5 * sp), 32.0))
    edema = profile.edema_mm * float(np.exp(rng.normal(0.0, 0.3)))
    edema = float(np.clip(edema, max(3.0, 1.5 * sp), 30.0))
    rim = float(max(rng.uniform(2.0, 6.0), 1.2 * sp))
    if rng.random() >= profile.necrosis_prob:
        rim = 10.0 * radius  # a solid, non-necrotic core
    share = 1.0 if rng.random() > 0.15 else float(rng.uniform(0.3, 0.7))
    depth = ndi.distance_transform_edt(anat.brain, sampling=sp)
    centre = None
    for need in (0.8 * radius + 6.0, 0.5 * radius + 4.0, 2.0 * sp, 0.0):
        cand = np.flatnonzero((anat.wm > 0.7) & (depth > need))
        if cand.size:
            centre = np.array(np.unravel_index(rng.choice(cand), anat.shape), dtype=float)
            break
    if centre is None:  # no white matter at all (cannot happen with the atlas)
        centre = (np.array(anat.shape) - 1) / 2.0
    return TumorPlan(centre, radius, edema, rim, share, float(rng.uniform(0.15, 0.4)))


def _lobe_distance(
    grid_mm: np.ndarray, centre_mm: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Approximate signed distance (mm, > 0 inside) to a randomly oriented ellipsoid."""
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    axes = radius * rng.uniform(0.75, 1.3, 3)
    rel = np.tensordot(rot.T.astype(np.float32), grid_mm - centre_mm[:, None, None, None], axes=1)
    q = np.sqrt(sum((rel[i] / np.float32(axes[i])) ** 2 for i in range(3)))
    return np.float32(radius) * (1.0 - q)


def draw_tumor(anat: Anatomy, plan: TumorPlan, rng: np.random.Generator) -> np.ndarray:
    """Label map (X, Y, Z) uint8 in BraTS 2021 values, all inside ``anat.brain``."""
    sp = anat.spacing
    r = plan.radius_mm
    reach = 1.7 * r + plan.edema_mm * 1.6 + 8.0
    lo = np.maximum(np.floor(plan.centre_vox - reach / sp).astype(int), 0)
    hi = np.minimum(np.ceil(plan.centre_vox + reach / sp).astype(int) + 1, anat.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
    grid = np.mgrid[box].astype(np.float32) * np.float32(sp)  # mm
    centre = plan.centre_vox * sp

    # Core: a main lobe and up to three satellites, merged (max of signed distances).
    dist = _lobe_distance(grid, centre, r, rng)
    for _ in range(int(rng.integers(0, 4))):
        direction = rng.standard_normal(3)
        offset = direction / np.linalg.norm(direction) * r * rng.uniform(0.35, 0.75)
        dist = np.maximum(
            dist, _lobe_distance(grid, centre + offset, r * rng.uniform(0.4, 0.75), rng)
        )
    cell = max(8.0 / sp, 1.5)
    noisy = dist + smooth_noise(shape, cell, rng) * np.float32(0.18 * r + 1.0)
    brain = anat.brain[box]
    core = (noisy > 0) & brain
    necrosis = (dist + smooth_noise(shape, cell, rng) * np.float32(0.12 * r) > plan.rim_mm) & core
    rim = core & ~necrosis
    enhancing = rim
    if plan.enhancing_share < 1.0:  # patchy enhancement; the rest is non-enhancing core (1)
        patch = smooth_noise(shape, cell, rng)
        if rim.any():
            enhancing = rim & (patch > np.quantile(patch[rim], 1.0 - plan.enhancing_share))
    if core.any() and not enhancing.any():  # keep a visible rim on coarse grids
        enhancing = core & ~ndi.binary_erosion(core)

    # Edema reaches further along white matter, little into cortex, never into CSF.
    wm, gm, csf = anat.wm[box], anat.gm[box], anat.csf[box]
    reach_mm = np.float32(plan.edema_mm) * (0.25 + 0.85 * wm + 0.25 * gm)
    reach_mm *= 1.0 + 0.35 * smooth_noise(shape, cell, rng)
    edema = (noisy + reach_mm > 0) & ~core & (csf < 0.5) & brain
    # Keep only edema connected to the core: no islands of edema far from the tumor.
    parts, _ = ndi.label(edema | core)
    edema &= np.isin(parts, np.unique(parts[core]))

    local = np.zeros(shape, dtype=np.uint8)
    local[edema] = ED
    local[core] = NCR
    local[enhancing] = ET
    label = np.zeros(anat.shape, dtype=np.uint8)
    label[box] = local
    return label
