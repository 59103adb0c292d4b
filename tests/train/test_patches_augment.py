"""Patch sampling, padding and augmentation on numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.train.augment import augment
from fedseg.train.config import AugmentConfig
from fedseg.train.patches import extract, pad_to, patch_corner


def test_pad_to_centres_small_volumes_and_keeps_large_ones() -> None:
    vol = np.ones((2, 10, 20, 5), np.float32)
    out = pad_to(vol, (16, 16, 16))
    assert out.shape == (2, 16, 20, 16)
    assert out[:, 3:13, :, 5:10].all() and out.sum() == vol.sum()


@pytest.mark.parametrize("size", [(8, 8, 8), (16, 4, 8), (20, 30, 10)])
def test_patches_fit_inside_the_volume(size: tuple[int, int, int]) -> None:
    shape = (20, 30, 10)
    vol = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    rng = np.random.default_rng(0)
    for _ in range(200):
        corner = patch_corner(shape, size, rng)
        assert all(0 <= c <= s - p for c, s, p in zip(corner, shape, size, strict=True))
        assert extract(vol, corner, size).shape == (1, *size)


def test_patch_larger_than_volume_is_refused() -> None:
    with pytest.raises(ValueError, match="pad it first"):
        patch_corner((10, 10, 10), (16, 8, 8), np.random.default_rng(0))


def test_tumor_sampler_is_biased_towards_the_tumor() -> None:
    shape, size = (64, 64, 64), (16, 16, 16)
    mask = np.zeros(shape, bool)
    mask[50:54, 50:54, 50:54] = True
    tumor = np.flatnonzero(mask)

    def hit_rate(p: float) -> float:
        rng = np.random.default_rng(1)
        hits = 0
        for _ in range(400):
            c = patch_corner(shape, size, rng, tumor=tumor, tumor_p=p)
            hits += bool(extract(mask[None], c, size).any())
        return hits / 400

    uniform, biased, always = hit_rate(0.0), hit_rate(0.5), hit_rate(1.0)
    assert always == 1.0
    assert uniform < 0.2  # the tumour is a small corner of the volume
    assert 0.4 < biased < 0.75  # half centred on it, plus uniform draws that hit it anyway


def _labelled_image(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An image whose channel 0 encodes each voxel's label, so alignment can be checked."""
    rng = np.random.default_rng(3)
    regions = (rng.random((3, *shape)) > 0.7).astype(np.uint8)
    code = regions[0] + 2 * regions[1] + 4 * regions[2].astype(np.int16)
    image = np.stack([code, -code, code * 2.0, np.zeros(shape)]).astype(np.float32)
    return image, regions


@pytest.mark.parametrize("shape", [(8, 8, 8), (8, 12, 8), (6, 10, 14)])
def test_augment_keeps_image_and_label_aligned_and_shape(shape: tuple[int, int, int]) -> None:
    image, regions = _labelled_image(shape)
    cfg = AugmentConfig(noise_p=0.0, rot90_p=0.5, rot180_p=0.5, flip_p=1.0)
    changed = 0
    for seed in range(40):
        img, reg = augment(image, regions, cfg, np.random.default_rng(seed))
        assert img.shape == image.shape and reg.shape == regions.shape
        assert img.dtype == np.float32 and img.flags.c_contiguous and reg.flags.c_contiguous
        np.testing.assert_array_equal(img[0], reg[0] + 2 * reg[1] + 4 * reg[2])
        np.testing.assert_array_equal(img[1], -img[0])
        assert np.sort(reg.ravel()).tolist() == np.sort(regions.ravel()).tolist()
        changed += not np.array_equal(reg, regions)
    assert changed >= 35  # a flip is always applied


def test_rot90_turns_cubic_patches_in_every_plane() -> None:
    image, regions = _labelled_image((8, 8, 8))
    cfg = AugmentConfig(noise_p=0.0, rot90_p=1.0, rot180_p=0.0, flip_p=0.0)
    seen = set()
    for seed in range(60):
        _, reg = augment(image, regions, cfg, np.random.default_rng(seed))
        for plane in ((2, 3), (1, 3), (1, 2)):
            for k in (1, 3):
                if np.array_equal(reg, np.rot90(regions, k, plane)):
                    seen.add((plane, k))
    assert len(seen) == 6


def test_noise_only_touches_the_image_with_the_configured_sigma() -> None:
    image, regions = _labelled_image((16, 16, 16))
    cfg = AugmentConfig(noise_sigma=0.1, noise_p=1.0, rot90_p=0.0, rot180_p=0.0, flip_p=0.0)
    img, reg = augment(image, regions, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(reg, regions)
    assert abs(float((img - image).std()) - 0.1) < 0.01


def test_augment_is_deterministic_under_a_seed() -> None:
    image, regions = _labelled_image((8, 8, 8))
    a = augment(image, regions, AugmentConfig(noise_p=1.0), np.random.default_rng(7))
    b = augment(image, regions, AugmentConfig(noise_p=1.0), np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
