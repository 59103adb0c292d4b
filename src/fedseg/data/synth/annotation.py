"""A badly annotating site: its label maps wrong in one systematic way (see BadKind)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fedseg.data.labels import ED, ET, NCR, labels_to_regions, regions_to_labels
from fedseg.data.synth.config import BadKind, SiteProfile


def _shift(label: np.ndarray, shift: tuple[int, int, int]) -> np.ndarray:
    """Move the label map by whole voxels; what moves out of the grid is lost (no wrap)."""
    out = np.zeros_like(label)
    src, dst = [], []
    for s, n in zip(shift, label.shape, strict=True):
        src.append(slice(max(-s, 0), n - max(s, 0)))
        dst.append(slice(max(s, 0), n - max(-s, 0)))
    out[tuple(dst)] = label[tuple(src)]
    return out


#: BraTS label values a scrambled site writes instead of (1, 2, 4): NCR->ED->ET->NCR.
SCRAMBLE = {NCR: ED, ED: ET, ET: NCR}


def scramble_labels(label: np.ndarray) -> np.ndarray:
    """``label`` with its tumor labels permuted by ``SCRAMBLE`` (every region wrong)."""
    out = label.copy()
    for a, b in SCRAMBLE.items():
        out[label == a] = b
    return out


def corrupt_label(
    label: np.ndarray, brain: np.ndarray, profile: SiteProfile, spacing: float
) -> np.ndarray:
    """The label a site with ``profile.bad_kind`` would have drawn (BraTS 2021 values);
    a clean site's label is returned unchanged."""
    kind = profile.bad_kind
    if kind is None:
        return label
    if kind is BadKind.SCRAMBLE:
        return scramble_labels(label)
    if kind is BadKind.SWAPPED:
        out = label.copy()
        out[label == NCR] = ED
        out[label == ED] = NCR
        return out
    if kind is BadKind.ERODED:
        steps = max(1, round(3.0 / spacing))
        regions = labels_to_regions(label)
        eroded = np.stack([ndi.binary_erosion(r, iterations=steps) for r in regions])
        return regions_to_labels(eroded)
    shifted = _shift(label, profile.bad_shift_vox)
    return np.where(brain, shifted, 0).astype(np.uint8)
