"""privacy.clipping: the clip bound holds for every update; noise has the asked scale."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedseg.privacy.clipping import add_noise, apply_update, clip, l2_norm, update_of

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    a=arrays(np.float32, st.integers(1, 40), elements=finite),
    b=arrays(np.float64, (3, 2), elements=finite),
    c=st.floats(1e-3, 1e3),
)
def test_clip_bound_holds_for_every_update(a: np.ndarray, b: np.ndarray, c: float) -> None:
    update = {"a": a.astype(np.float64), "b": b}
    clipped, before = clip(update, c)
    assert l2_norm(clipped) <= c * (1 + 1e-9)
    assert before == l2_norm(update)
    if before <= c:  # within the bound: unchanged
        for k in update:
            np.testing.assert_array_equal(clipped[k], update[k])
    else:  # direction kept
        f = c / before
        for k in update:
            np.testing.assert_allclose(clipped[k], update[k] * f, rtol=1e-9, atol=1e-12)


def test_update_leaves_counters_out_and_apply_keeps_them() -> None:
    g = {"w": np.zeros(3, np.float32), "n": np.array(4, np.int64)}
    new = {"w": np.full(3, 2.0, np.float32), "n": np.array(9, np.int64)}
    u = update_of(new, g)
    assert list(u) == ["w"]
    back = apply_update(g, u)
    assert back["w"].dtype == np.float32 and back["n"] == 4
    np.testing.assert_array_equal(back["w"], new["w"])


def test_noise_std_matches() -> None:
    rng = np.random.default_rng(0)
    zero = {"w": np.zeros(200_000)}
    noisy = add_noise(zero, 0.37, rng)["w"]
    assert abs(noisy.std() / 0.37 - 1) < 0.01 and abs(noisy.mean()) < 0.01
