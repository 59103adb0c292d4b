"""Fixed-point codec of secure aggregation: round trip, the stated bound, the overflow guard."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseg.errors import FedsegError
from fedseg.privacy.fixed_point import choose_scale, decode_sum, encode, mean_bound, word_dtype


def _sum_words(words: list[np.ndarray], bits: int) -> np.ndarray:
    acc = np.zeros_like(words[0])
    for w in words:
        acc += w  # wraps mod 2**bits, as the masked sum does
    return acc


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    bits=st.sampled_from([32, 64]),
    clip=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
    weights=st.lists(st.floats(0.01, 1e4), min_size=8, max_size=8),
)
def test_weighted_mean_within_stated_bound(n, bits, clip, seed, weights):
    rng = np.random.default_rng(seed)
    w = np.array(weights[:n])
    xs = [rng.uniform(-clip, clip, size=257) for _ in range(n)]
    xs[0][:3] = [clip, -clip, 0.0]  # the extremes
    scale = choose_scale(clip, float(w.sum()), n, bits)
    words = [encode(x, wi, scale, clip, bits).words for x, wi in zip(xs, w, strict=True)]
    assert all(q.dtype == word_dtype(bits) for q in words)
    mean = decode_sum(_sum_words(words, bits), scale, bits) / w.sum()
    exact = sum(wi * x for wi, x in zip(w, xs, strict=True)) / w.sum()
    bound = mean_bound(n, scale, float(w.sum()))
    assert np.max(np.abs(mean - exact)) <= bound * (1 + 1e-9) + 1e-12 * clip
    if bits == 32 and n <= 8:
        assert bound <= 8 / (2 * (2**31 - 10)) * clip * 1.01


def test_round_trip_negative_values_two_complement():
    scale = choose_scale(1.0, 1.0, 1, 32)
    enc = encode(np.array([-0.5, 0.25, 0.0]), 1.0, scale, 1.0, 32)
    assert enc.words[0] > 2**31  # negative numbers are the high words
    assert np.allclose(decode_sum(enc.words, scale, 32), [-0.5, 0.25, 0.0], atol=1e-9)


def test_overflow_guard_clamps_and_the_sum_cannot_wrap():
    n, clip, bits = 3, 1.0, 32
    scale = choose_scale(clip, 3.0, n, bits)
    # a site sends values far beyond the range: they are clamped, so the sum stays signed
    big = [encode(np.full(4, 1e6), 1.0, scale, clip, bits) for _ in range(n)]
    assert big[0].clamped == 4
    total = decode_sum(_sum_words([e.words for e in big], bits), scale, bits)
    assert np.all(total > 0) and np.allclose(total, 3.0, atol=1e-6)
    low = [encode(np.full(4, -clip), 1.0, scale, clip, bits).words for _ in range(n)]
    assert np.allclose(decode_sum(_sum_words(low, bits), scale, bits), -3.0, atol=1e-6)


def test_scale_refused_when_the_word_cannot_hold_the_sum():
    with pytest.raises(FedsegError, match="modulus_bits: 64"):
        choose_scale(1e6, 1e6, 4, 32)
    assert choose_scale(1e6, 1e6, 4, 64) > 1
    with pytest.raises(FedsegError, match="32 or 64"):
        word_dtype(16)
