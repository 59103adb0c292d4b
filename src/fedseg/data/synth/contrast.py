"""MR contrast of each modality: the intensity of every tissue and tumor compartment,
relative to white matter in T1 (= 1), mixed by partial-volume fractions.

Relative values follow the usual appearance of gliomas: on T1 the tumor is dark; on T1Gd
the enhancing rim is bright and the necrosis dark; on T2 fluid (CSF, necrosis) and edema
are bright; FLAIR suppresses CSF and shows edema brightest. GM is darker than WM on T1
and brighter on T2/FLAIR.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fedseg.data.cases import MODALITIES
from fedseg.data.labels import ED, ET, NCR
from fedseg.data.synth.anatomy import Anatomy
from fedseg.data.synth.fields import smooth_noise

COMPARTMENTS: tuple[str, ...] = ("csf", "gm", "wm", "ncr", "ed", "et")

#: Intensity (WM on T1 = 1) per modality (MODALITIES order) per compartment.
INTENSITY: dict[str, tuple[float, float, float, float]] = {
    #       T1    T1Gd  T2    FLAIR
    "csf": (0.30, 0.32, 1.90, 0.22),
    "gm": (0.66, 0.68, 1.00, 0.92),
    "wm": (1.00, 1.02, 0.62, 0.70),
    "ncr": (0.38, 0.36, 1.65, 0.78),
    "ed": (0.72, 0.74, 1.40, 1.50),
    "et": (0.62, 1.65, 1.10, 1.18),
}
#: How much of the atlas T1's fine detail each modality shows (negative: inverted contrast).
DETAIL_WEIGHT: tuple[float, float, float, float] = (1.0, 1.0, -1.2, -0.5)


def synthesize(
    anat: Anatomy, label: np.ndarray, rng: np.random.Generator, *, texture: float = 0.06
) -> np.ndarray:
    """Noise-free images (4, X, Y, Z) float32 in MODALITIES order; 0 outside the brain.

    Tumor compartments get soft edges (about 1 mm, at most half a voxel) and a
    smooth heterogeneous texture of relative std ``texture``.
    """
    tumor = {
        "ncr": (label == NCR).astype(np.float32),
        "ed": (label == ED).astype(np.float32),
        "et": (label == ET).astype(np.float32),
    }
    if label.any():
        # Soft edges of ~1 mm; on coarse grids the voxel itself is the partial volume.
        sigma = min(0.5, 1.0 / anat.spacing)
        tumor = {k: ndi.gaussian_filter(v, sigma) for k, v in tumor.items()}
    raw_total = tumor["ncr"] + tumor["ed"] + tumor["et"]
    over = np.where(raw_total > 1.0, 1.0 / np.maximum(raw_total, 1e-6), 1.0).astype(np.float32)
    healthy = 1.0 - np.minimum(raw_total, 1.0)
    fractions = {"csf": anat.csf * healthy, "gm": anat.gm * healthy, "wm": anat.wm * healthy}
    fractions.update({k: v * over for k, v in tumor.items()})
    hetero = 1.0 + texture * smooth_noise(anat.shape, max(4.0 / anat.spacing, 1.5), rng)
    images = np.zeros((len(MODALITIES), *anat.shape), dtype=np.float32)
    for m in range(len(MODALITIES)):
        img = images[m]
        for name in COMPARTMENTS:
            value = np.float32(INTENSITY[name][m])
            if name in tumor:
                img += fractions[name] * value * hetero
            else:
                img += fractions[name] * value
        img += np.float32(DETAIL_WEIGHT[m]) * anat.detail * healthy
        np.clip(img, 0.02, None, out=img)
        img *= anat.brain
    return images
