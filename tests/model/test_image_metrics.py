"""Image-quality metrics of synthesis (``model.metrics``): brain-masked SSIM is MONAI's SSIM
map averaged over the mask, PSNR MONAI's, MAE plain; expected values worked out in comments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric

from fedseg.errors import FedsegError
from fedseg.model.metrics import METRIC_RANGES, PSNR_CAP, mae, psnr, ssim_masked


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.random(shape).astype(np.float32)
    pred = np.clip(ref + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return pred, ref


@pytest.mark.parametrize(("shape", "dims"), [((3, 32, 32), 2), ((1, 20, 22, 16), 3)])
def test_ssim_over_a_full_mask_equals_monai_ssim_metric(shape: tuple[int, ...], dims: int) -> None:
    # a full mask averages the whole (valid) SSIM map, which is what SSIMMetric reports per
    # image; the images of a batch have equal sizes, so the pooled mean is the mean of means
    pred, ref = _pair(shape)
    full = np.ones(shape, bool)
    monai = SSIMMetric(spatial_dims=dims, data_range=1.0)(
        torch.from_numpy(pred).unsqueeze(1), torch.from_numpy(ref).unsqueeze(1)
    )
    assert ssim_masked(pred, ref, full, dims) == pytest.approx(float(monai.mean()), abs=1e-6)
    assert ssim_masked(ref, ref, full, dims) == pytest.approx(1.0, abs=1e-6)


def test_ssim_counts_only_the_mask() -> None:
    # the images differ only in columns 0-9; the mask covers columns 30-63, whose 11-wide
    # windows (half 5) reach back to column 25 at most: the masked SSIM is exactly 1
    _, ref = _pair((2, 64, 64))
    pred = ref.copy()
    pred[..., :10] = 1 - ref[..., :10]
    mask = np.zeros(pred.shape, bool)
    mask[..., 30:] = True
    assert ssim_masked(pred, ref, mask, 2) == pytest.approx(1.0, abs=1e-6)
    assert ssim_masked(pred, ref, np.ones(pred.shape, bool), 2) < 0.9  # ~0.81


def test_ssim_refuses_small_images_and_an_empty_mask() -> None:
    pred, ref = _pair((1, 10, 32))
    with pytest.raises(FedsegError, match="at least 11"):
        ssim_masked(pred, ref, np.ones(pred.shape, bool), 2)
    pred, ref = _pair((1, 32, 32))
    border = np.zeros(pred.shape, bool)
    border[..., :5, :] = True  # only where the valid map does not reach
    with pytest.raises(FedsegError, match="no mask voxel"):
        ssim_masked(pred, ref, border, 2)


def test_psnr_and_mae_known_values() -> None:
    zeros, tenth = np.zeros((4, 4), np.float32), np.full((4, 4), 0.1, np.float32)
    # MSE 0.01 with max value 1: 10 log10(1 / 0.01) = 20 dB; MAE 0.1
    assert psnr(tenth, zeros) == pytest.approx(20.0, abs=1e-4)
    assert mae(tenth, zeros) == pytest.approx(0.1, abs=1e-7)
    # masked: only the voxels where they differ by 0.5 -> MSE 0.25 -> 10 log10(4) = 6.0206 dB
    pred = zeros.copy()
    pred[0] = 0.5
    mask = np.zeros_like(pred, bool)
    mask[0] = True
    assert psnr(pred, zeros, mask) == pytest.approx(10 * np.log10(4), abs=1e-4)
    assert mae(pred, zeros, mask) == pytest.approx(0.5)
    # identical images: infinite PSNR reported as the cap, the top of the allowed range
    assert psnr(zeros, zeros) == PSNR_CAP == METRIC_RANGES["psnr"][1]
    with pytest.raises(FedsegError, match="mask is empty"):
        mae(pred, zeros, np.zeros_like(mask))
