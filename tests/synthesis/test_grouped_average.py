"""``aggregation.grouped_average``: one weight per update and key group (the ModalityBank
generator's ``kernel``, ``bank:<modality>``, ``shared``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseg.federation.rounds.aggregation import grouped_average, weighted_average
from fedseg.federation.rounds.spool import Spool
from fedseg.model.generator import param_group
from fedseg.model.weights import Weights

KEYS = {
    "kernel.enc0a.weight": (3, 2),
    "kernel.enc0a.bias": (3,),
    "bank.t1.enc0a.gamma": (3, 2),
    "bank.flair.enc0a.gamma": (3, 2),
    "bank.flair.enc0a.bias": (3,),
    "shared.norm.weight": (4,),
}
GROUPS = ("kernel", "bank:t1", "bank:flair", "shared")


def _update(rng: np.random.Generator) -> Weights:
    return {k: rng.normal(size=s).astype(np.float32) for k, s in KEYS.items()}


group_weights = st.fixed_dictionaries(
    {g: st.sampled_from([0.0, 0.0, 1.0, 2.5, 7.0]) for g in GROUPS}
)


@settings(max_examples=60, deadline=None)
@given(st.lists(group_weights, min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_equals_the_per_key_weighted_mean(weights: list[dict[str, float]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = _update(rng)
    updates = [_update(rng) for _ in weights]
    out = grouped_average(updates, weights, param_group, ref)
    assert list(out) == list(ref)
    for k in KEYS:
        g = param_group(k)
        w = np.array([wu[g] for wu in weights], np.float64)
        assert out[k].dtype == np.float32
        if w.sum() == 0:  # no site trained it: the reference, bit for bit
            assert out[k].tobytes() == ref[k].tobytes()
            continue
        expect = sum(wi * u[k].astype(np.float64) for wi, u in zip(w, updates, strict=True))
        np.testing.assert_allclose(out[k], expect / w.sum(), rtol=1e-6, atol=1e-7)


def test_a_group_no_site_trained_keeps_the_reference() -> None:
    rng = np.random.default_rng(0)
    ref, a, b = _update(rng), _update(rng), _update(rng)
    weights = [{"bank:t1": 1.0, "kernel": 0.0}, {"bank:t1": 3.0}]
    out = grouped_average([a, b], weights, param_group, ref)
    for k in ("kernel.enc0a.weight", "bank.flair.enc0a.gamma", "shared.norm.weight"):
        assert out[k].tobytes() == ref[k].tobytes()
        assert out[k] is not ref[k]  # a copy: the new model owns its arrays
    np.testing.assert_allclose(out["bank.t1.enc0a.gamma"],
                               (a["bank.t1.enc0a.gamma"] + 3 * b["bank.t1.enc0a.gamma"]) / 4,
                               rtol=1e-6)  # fmt: skip


def test_a_site_without_the_modality_does_not_count() -> None:
    """site2 has no flair: bank.flair is the mean of site1 and site3 only (by cases)."""
    rng = np.random.default_rng(1)
    ref = _update(rng)
    ups = [_update(rng) for _ in range(3)]
    n = [2.0, 5.0, 3.0]
    weights = [{"bank:t1": n[0], "bank:flair": n[0]}, {"bank:t1": n[1]},
               {"bank:t1": n[2], "bank:flair": n[2]}]  # fmt: skip
    out = grouped_average(ups, weights, param_group, ref)
    k = "bank.flair.enc0a.bias"
    np.testing.assert_allclose(out[k], (2 * ups[0][k] + 3 * ups[2][k]) / 5, rtol=1e-6, atol=1e-6)
    k = "bank.t1.enc0a.gamma"
    np.testing.assert_allclose(out[k], (2 * ups[0][k] + 5 * ups[1][k] + 3 * ups[2][k]) / 10,
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_one_group_is_weighted_average() -> None:
    rng = np.random.default_rng(2)
    ref = _update(rng)
    ups = [_update(rng) for _ in range(3)]
    n = [1.0, 4.0, 2.0]
    out = grouped_average(ups, [{"all": w} for w in n], lambda k: "all", ref)
    plain = weighted_average(ups, n)
    for k in KEYS:
        assert out[k].tobytes() == plain[k].tobytes(), k


def test_spooled_updates_give_the_same_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref = _update(rng)
    ups = [_update(rng) for _ in range(3)]
    weights = [{"kernel": 1.0, "bank:t1": 2.0}, {"bank:flair": 4.0, "shared": 1.0},
               {"bank:t1": 1.0, "bank:flair": 1.0, "shared": 2.0}]  # fmt: skip
    memory = grouped_average(ups, weights, param_group, ref)
    spool = Spool(tmp_path / "spool")
    parked = [spool.park(u) for u in ups]
    streamed = grouped_average(parked, weights, param_group, ref)
    spool.remove()
    for k in KEYS:
        assert memory[k].tobytes() == streamed[k].tobytes(), k


def test_bad_weights_are_refused() -> None:
    ref = _update(np.random.default_rng(4))
    with pytest.raises(ValueError, match="finite and >= 0"):
        grouped_average([ref], [{"kernel": -1.0}], param_group, ref)
    with pytest.raises(ValueError, match="1 updates but 2"):
        grouped_average([ref], [{}, {}], param_group, ref)
