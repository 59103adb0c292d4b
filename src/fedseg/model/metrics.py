"""Segmentation metrics per region, BraTS 2021 conventions (numpy/scipy only), and the
image-quality metrics of synthesis (SSIM, PSNR, MAE; MONAI, imported when called).

The empty-mask rules live here and nowhere else:
- both prediction and reference empty: Dice 1, Jaccard 1, HD95 0 mm, sensitivity 1;
- exactly one empty: Dice 0, Jaccard 0, HD95 ``HD95_ONE_EMPTY`` (373.13 mm, the diagonal
  of the 240x240x155 mm BraTS grid), sensitivity 0 when the reference has voxels.
HD95 is the 95th percentile of the pooled surface distances in both directions
(prediction surface -> reference surface and back), in mm, honouring voxel spacing.
Specificity is over the whole volume given.

Image quality (``synth.validate``, images scaled to [0, 1], data range 1): ``ssim_masked`` is
MONAI's SSIM map (``compute_ssim_and_cs``: Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03)
averaged over the mask's voxels inside the map's valid region (the map is 10 voxels shorter
per spatial axis: the window never leaves the image) — the brain-masked SSIM; whole-image
SSIM is inflated by the zero background. ``psnr`` is MONAI's ``PSNRMetric(max_val=1)`` over
the given (masked) voxels, capped at ``PSNR_CAP`` dB (identical images: infinite);
``mae`` the mean absolute difference over the same voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from fedseg.data.labels import REGIONS, labels_to_regions
from fedseg.errors import FedsegError

HD95_ONE_EMPTY = 373.13
#: SSIM's Gaussian window: size (voxels per axis) and sigma (voxels)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
#: PSNR of identical images (infinite) is reported as this many dB (METRIC_RANGES' top)
PSNR_CAP = 100.0
METRICS: tuple[str, ...] = ("dice", "jaccard", "hd95", "sensitivity", "specificity")
#: The range of each metric's per-case values, hence of any mean over cases: what a site's
#: validation summary may claim (``federation.rounds.bounds``). HD95's top is the BraTS
#: grid's diagonal (``HD95_ONE_EMPTY``).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "dice": (0.0, 1.0),
    "jaccard": (0.0, 1.0),
    "hd95": (0.0, HD95_ONE_EMPTY),
    "sensitivity": (0.0, 1.0),
    "specificity": (0.0, 1.0),
    # image synthesis (``synth.validate``; images scaled to [0, 1])
    "ssim": (-1.0, 1.0),
    "psnr": (0.0, 100.0),
    "mae": (0.0, 1.0),
}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, r = pred.astype(bool), ref.astype(bool)
    total = p.sum() + r.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(p, r).sum() / total)


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard (IoU) of two boolean masks; 1.0 when both are empty."""
    p, r = pred.astype(bool), ref.astype(bool)
    union = np.logical_or(p, r).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, r).sum() / union)


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TP / (TP + FN); with an empty reference, 1.0 if the prediction is empty too, else 0."""
    p, r = pred.astype(bool), ref.astype(bool)
    positives = r.sum()
    if positives == 0:
        return 1.0 if p.sum() == 0 else 0.0
    return float(np.logical_and(p, r).sum() / positives)


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TN / (TN + FP) over the whole array; 1.0 if there are no negatives."""
    p, r = pred.astype(bool), ref.astype(bool)
    negatives = (~r).sum()
    return 1.0 if negatives == 0 else float(np.logical_and(~p, ~r).sum() / negatives)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one 6-neighbour outside it (border counts as outside)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1),
                                    border_value=0)  # fmt: skip
    return mask & ~eroded


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...] | np.ndarray) -> float:
    """95th percentile of pooled symmetric surface distances in mm (empty rules above)."""
    p, r = pred.astype(bool), ref.astype(bool)
    p_any, r_any = p.any(), r.any()
    if not p_any and not r_any:
        return 0.0
    if p_any != r_any:
        return HD95_ONE_EMPTY
    # Crop to the union's bounding box (+1 voxel): all surface voxels lie inside it.
    idx = np.argwhere(p | r)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, p.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    ps, rs = _surface(p[box]), _surface(r[box])
    sampling = tuple(float(s) for s in spacing)
    to_r = ndimage.distance_transform_edt(~rs, sampling=sampling)[ps]
    to_p = ndimage.distance_transform_edt(~ps, sampling=sampling)[rs]
    return float(np.percentile(np.concatenate([to_r, to_p]), 95))


def region_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...] | np.ndarray,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """``metrics`` (default all ``METRICS``, in that order) for one pair of boolean masks
    (X, Y, Z)."""
    unknown = [m for m in metrics if m not in _METRIC_FUNCTIONS]
    if unknown:
        raise FedsegError(f"unknown metric {unknown[0]!r}; use some of {', '.join(METRICS)}")
    return {m: _METRIC_FUNCTIONS[m](pred, ref, spacing) for m in metrics}


def case_metrics(
    pred_label: np.ndarray,
    ref_label: np.ndarray,
    spacing: tuple[float, ...] | np.ndarray,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """``metrics`` per region for BraTS 2021 label maps (X, Y, Z): ``out[region][metric]``."""
    pr, rr = labels_to_regions(pred_label), labels_to_regions(ref_label)
    return {reg: region_metrics(pr[i], rr[i], spacing, metrics) for i, reg in enumerate(REGIONS)}


_Spacing = tuple[float, ...] | np.ndarray
_METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, _Spacing], float]] = {
    "dice": lambda p, r, _s: dice(p, r),
    "jaccard": lambda p, r, _s: jaccard(p, r),
    "hd95": hd95,
    "sensitivity": lambda p, r, _s: sensitivity(p, r),
    "specificity": lambda p, r, _s: specificity(p, r),
}


def mean_dice(metrics: dict[str, dict[str, float]]) -> float:
    """Mean of the Dice over the three regions of one ``case_metrics`` result."""
    return float(np.mean([metrics[r]["dice"] for r in REGIONS]))


def _masked_pair(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``ref`` as float32 vectors of the voxels in ``mask`` (all if None)."""
    p, r = np.asarray(pred, np.float32), np.asarray(ref, np.float32)
    if p.shape != r.shape or (mask is not None and np.shape(mask) != p.shape):
        raise FedsegError(f"image shapes differ: {p.shape}, {r.shape}, mask {np.shape(mask)}")
    if mask is not None:
        m = np.asarray(mask, bool)
        p, r = p[m], r[m]
    if p.size == 0:
        raise FedsegError("no voxel to compare: the mask is empty")
    return p.ravel(), r.ravel()


def ssim_masked(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, spatial_dims: int) -> float:
    """Mean of MONAI's SSIM map over ``mask`` (data range 1). Arrays of one shape whose last
    ``spatial_dims`` axes are spatial; leading axes (e.g. a stack of slices) are a batch and
    their masked voxels are pooled. Every spatial axis needs at least ``SSIM_WINDOW`` voxels."""
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    p, r, m = (np.asarray(a) for a in (pred, ref, mask))
    if not (p.shape == r.shape == m.shape) or p.ndim < spatial_dims:
        raise FedsegError(f"image shapes differ: {p.shape}, {r.shape}, mask {m.shape}")
    spatial = p.shape[p.ndim - spatial_dims :]
    if min(spatial) < SSIM_WINDOW:
        raise FedsegError(f"SSIM needs at least {SSIM_WINDOW} voxels per axis, got {spatial}")

    def batch(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).reshape(-1, 1, *spatial)

    with torch.no_grad():
        ssim_map, _ = compute_ssim_and_cs(
            batch(p),
            batch(r),
            spatial_dims,
            kernel_size=[SSIM_WINDOW] * spatial_dims,
            kernel_sigma=[SSIM_SIGMA] * spatial_dims,
            data_range=1.0,
        )
    half = SSIM_WINDOW // 2
    valid = (slice(None), *(slice(half, n - half) for n in spatial))
    inside = m.astype(bool).reshape(-1, *spatial)[valid]
    if not inside.any():
        raise FedsegError(
            "no mask voxel inside SSIM's valid region (the window's half off the edges)"
        )
    return float(ssim_map[:, 0].numpy()[inside].mean())


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB (MONAI ``PSNRMetric``, max value 1) over the voxels in ``mask`` (all if
    None), capped at ``PSNR_CAP``."""
    import torch
    from monai.metrics import PSNRMetric

    p, r = _masked_pair(pred, ref, mask)
    value = PSNRMetric(max_val=1.0)(
        torch.from_numpy(p)[None, None], torch.from_numpy(r)[None, None]
    )
    return float(min(float(value.item()), PSNR_CAP))


def mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference over the voxels in ``mask`` (all if None)."""
    p, r = _masked_pair(pred, ref, mask)
    return float(np.abs(p.astype(np.float64) - r).mean())
