"""Cases as generator samples (``synth.data``): intensity scaling, slice/patch preparation
and the seeded sampler."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.synth.config import SynthDataConfig
from fedseg.synth.data import (
    SampleSampler,
    brain_fraction,
    fit,
    prepare_case,
    scale_intensity,
)


def _case(shape: tuple[int, int, int] = (60, 56, 30), seed: int = 0):
    """(image (4, X, Y, Z), label): an ellipsoid brain of positive intensities (zero
    background), a small tumour of labels 1, 2, 4, T2 left out (all zero)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    r = np.array(shape, np.float32)[:, None, None, None] * 0.4
    brain = (((grid - c) / r) ** 2).sum(0) <= 1
    image = (rng.uniform(50, 500, (4, *shape)) * brain).astype(np.float32)
    image[2] = 0
    label = np.zeros(shape, np.uint8)
    x, y, z = (s // 2 for s in shape)
    label[x - 4 : x + 4, y - 4 : y + 4, z - 3 : z + 3] = 2
    label[x - 2 : x + 2, y - 2 : y + 2, z - 1 : z + 1] = 4
    label[x, y, z] = 1
    return image, label


def test_scaling_puts_the_brain_percentile_at_one() -> None:
    image, _ = _case()
    brain = np.any(image != 0, axis=0)
    out = scale_intensity(image, brain, 99.0)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    for c in (0, 1, 3):
        top = np.percentile(image[c][brain], 99.0)
        # below the percentile the scale is exactly 1 / top; above it, clipped to 1
        np.testing.assert_allclose(out[c][brain], np.minimum(image[c][brain] / top, 1), rtol=1e-6)
        assert np.percentile(out[c][brain], 99.0) == pytest.approx(1.0, abs=1e-4)
        assert np.mean(out[c][brain] == 1.0) == pytest.approx(0.01, abs=0.002)
    assert not out[2].any()  # an all-zero (absent) channel stays zero
    assert not out[:, ~brain].any()


def test_fit_pads_centred_and_crops_around_the_centre() -> None:
    a = np.arange(6, dtype=np.float32).reshape(1, 6)
    np.testing.assert_array_equal(fit(a, (8,), (2.5,)), [[0, 0, 1, 2, 3, 4, 5, 0]])
    np.testing.assert_array_equal(fit(a, (3,), (4.0,)), [[2, 3, 4]])  # round(4 - 1.5) = 2
    np.testing.assert_array_equal(fit(a, (3,), (0.0,)), [[0, 1, 2]])  # clamped to the edge


@pytest.mark.parametrize("present", [("t1", "t1ce", "flair"), ("flair",)])
def test_2d_samples_have_the_slice_size_and_the_brain_fraction(present: tuple[str, ...]) -> None:
    image, label = _case((70, 56, 30))  # wider than the slice: cropped around the brain
    data = SynthDataConfig(slice_size=(64, 64), min_brain_fraction=0.3)
    cs = prepare_case("c1", image, label, present, data, spatial_dims=2)
    brain = np.any(image[[0, 1, 3]] != 0, axis=0) | (label > 0)
    n = int((brain_fraction(brain) > 0).sum())
    assert cs.condition.shape == (n, 4, 64, 64)
    assert cs.target.shape == (n, len(present), 64, 64)
    assert cs.brain.shape == (n, 1, 64, 64) and cs.brain.dtype == bool
    assert cs.modalities == present
    # every brain voxel of the slice kept (the 70-voxel axis holds a 56-voxel brain)
    assert cs.brain.sum() == brain.sum()
    # training slices: exactly those with >= 30 % brain on the case's grid
    frac = brain_fraction(brain)
    assert list(cs.train) == list(np.flatnonzero(frac[frac > 0] >= 0.3))
    # the condition's tumour channels hold the label map's voxels
    assert cs.condition[:, 2].sum() == (label == 2).sum()


def test_sampler_is_seeded_and_draws_training_slices() -> None:
    image, label = _case()
    data = SynthDataConfig(slice_size=(64, 64), batch_size=5)
    cases = [prepare_case(f"c{i}", image, label, ("t1", "flair"), data, 2) for i in range(2)]
    a = SampleSampler(cases, data, 2, seed=3)
    b = SampleSampler(cases, data, 2, seed=3)
    other = SampleSampler(cases, data, 2, seed=4)
    for _ in range(3):
        x, y, z = a.batch(), b.batch(), other.batch()
        np.testing.assert_array_equal(x.condition, y.condition)
        np.testing.assert_array_equal(x.target, y.target)
    assert x.condition.shape == (5, 4, 64, 64) and x.target.shape == (5, 2, 64, 64)
    assert not np.array_equal(x.target, z.target)
    # every drawn slice has at least the minimum brain fraction (of the 60 x 56 grid)
    assert (x.brain.sum(axis=(1, 2, 3)) >= data.min_brain_fraction * 60 * 56).all()


def test_3d_patches_have_the_patch_size() -> None:
    image, label = _case((40, 36, 20))  # smaller than the patch: padded
    data = SynthDataConfig(patch_size=(32, 32, 16), batch_size=2)
    cs = prepare_case("c1", image, label, ("t1",), data, spatial_dims=3)
    assert cs.condition.shape == (1, 4, 40, 36, 20)
    batch = SampleSampler([cs], data, 3, seed=0).batch()
    assert batch.condition.shape == (2, 4, 32, 32, 16)
    assert batch.target.shape == (2, 1, 32, 32, 16)


def test_no_training_slice_is_one_line() -> None:
    image, label = _case()
    data = SynthDataConfig(min_brain_fraction=0.99)
    cs = prepare_case("c1", image, label, ("t1",), data, 2)
    with pytest.raises(FedsegError, match="min_brain_fraction"):
        SampleSampler([cs], data, 2, seed=0)


def test_an_all_zero_present_modality_is_one_line() -> None:
    # _case leaves T2 all zero: fine when T2 is not present, refused when it is
    image, label = _case()
    data = SynthDataConfig()
    prepare_case("c1", image, label, ("t1", "flair"), data, 2)
    with pytest.raises(FedsegError, match="t2: an all-zero image"):
        prepare_case("c1", image, label, ("t1", "t2"), data, 2)
