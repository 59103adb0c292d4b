"""Crop to the non-zero box, z-score, and put back."""

from __future__ import annotations

import numpy as np

from fedseg.data.preprocess import crop_and_normalize, nonzero_box, uncrop, zscore_nonzero


def test_nonzero_box_with_margin() -> None:
    image = np.zeros((2, 10, 9, 8), dtype=np.float32)
    image[0, 2:5, 3, 4] = 1
    image[1, 6, 7, 1] = -2  # negative values count as non-zero
    assert nonzero_box(image) == (slice(2, 7), slice(3, 8), slice(1, 5))
    assert nonzero_box(image, margin=2) == (slice(0, 9), slice(1, 9), slice(0, 7))


def test_all_zero_image_keeps_full_extent() -> None:
    image = np.zeros((1, 4, 5, 6))
    assert nonzero_box(image) == (slice(0, 4), slice(0, 5), slice(0, 6))
    assert np.all(zscore_nonzero(image) == 0)


def test_zscore_nonzero_statistics() -> None:
    rng = np.random.default_rng(1)
    image = np.zeros((2, 6, 6, 6))
    image[:, 1:5, 1:5, 1:5] = rng.normal(50, 7, (2, 4, 4, 4))
    image[1, 1:5, 1:5, 1:5] = 3.0  # constant channel: std 0 must not divide by zero
    out = zscore_nonzero(image)
    assert out.dtype == np.float32
    inside = out[0, 1:5, 1:5, 1:5]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5
    assert np.all(out[:, 0] == 0)
    assert np.all(out[1, 1:5, 1:5, 1:5] == 0)


def test_crop_zscore_uncrop_round_trip(factory) -> None:
    image, label = factory.volumes()
    cropped, box = crop_and_normalize(image)
    assert cropped.shape == (4, *(s - 2 for s in factory.shape))  # a 1-voxel zero border
    restored = uncrop(cropped, box, factory.shape)
    assert restored.shape == image.shape
    mask = image != 0
    assert np.array_equal(restored != 0, mask)
    # undo the z-score per channel with the original statistics: the original comes back
    for c in range(4):
        vals = image[c][mask[c]].astype(np.float64)
        back = restored[c][mask[c]] * vals.std() + vals.mean()
        assert np.allclose(back, vals, atol=1e-3)
    # the label uncrops with the same box
    labels = uncrop(label[box][None], box, factory.shape)[0]
    assert np.array_equal(labels, label)
