"""Aggregation math on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.rounds.aggregation import (
    UpdateRejected,
    check_update,
    difference_norm,
    weighted_average,
    without_one,
)
from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.registry import STRATEGIES, make_strategy
from fedseg.plan import StrategyConfig


def _w(value: float, counter: int = 0) -> dict[str, np.ndarray]:
    return {
        "w16": np.full((2, 3), value, np.float16),
        "w32": np.full((4,), value, np.float32),
        "w64": np.full((1, 2), value, np.float64),
        "count": np.array(counter, np.int64),
        "mask": np.array([value > 0.5, False]),
    }


def test_weighted_average_weights_by_cases_and_keeps_dtypes() -> None:
    avg = weighted_average([_w(0.0, 10), _w(1.0, 20)], [1, 3])
    for k in ("w16", "w32", "w64"):
        assert avg[k].dtype == _w(0)[k].dtype
        np.testing.assert_allclose(avg[k].astype(np.float64), 0.75, rtol=1e-3)
    # integer counters: weighted mean rounded to the nearest integer, dtype kept
    assert avg["count"].dtype == np.int64 and int(avg["count"]) == 18  # 0.25*10 + 0.75*20 = 17.5
    # booleans: weighted majority
    assert avg["mask"].dtype == np.bool_ and avg["mask"].tolist() == [True, False]
    assert list(avg) == list(_w(0))


def test_plain_mean_and_bad_weights() -> None:
    avg = weighted_average([_w(0.0), _w(1.0), _w(2.0)], [1, 1, 1])
    np.testing.assert_allclose(avg["w64"], 1.0)
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([_w(0.0)], [0])
    with pytest.raises(ValueError, match="2 updates but 1 weights"):
        weighted_average([_w(0.0), _w(1.0)], [1])


def test_float16_average_is_computed_in_float64() -> None:
    """The float16 result is the float64 mean rounded once, not a float16 running sum."""
    rng = np.random.default_rng(0)
    ups = [{"x": rng.normal(100, 1, 64).astype(np.float16)} for _ in range(7)]
    avg = weighted_average(ups, [1, 2, 3, 4, 5, 6, 7])
    w = np.arange(1, 8, dtype=np.float64) / 28
    expected = sum(wi * u["x"].astype(np.float64) for wi, u in zip(w, ups, strict=True))
    assert avg["x"].dtype == np.float16
    np.testing.assert_array_equal(avg["x"], expected.astype(np.float16))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda w: {**w, "w32": np.array([1, np.nan, 0, 0], np.float32)}, "non-finite"),
        (lambda w: {**w, "w64": np.array([[np.inf, 0.0]])}, "non-finite"),
        (lambda w: {**w, "w32": np.zeros((5,), np.float32)}, "shape"),
        (lambda w: {k: v for k, v in w.items() if k != "count"}, "missing"),
        (lambda w: {**w, "extra": np.zeros(1)}, "unknown"),
        (lambda w: {**w, "w32": np.zeros((4,), np.float64)}, "dtype"),
    ],
)
def test_check_update_rejects(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    ref = _w(0.0)
    check_update(_w(1.0), ref)  # a good update passes
    with pytest.raises(UpdateRejected, match=reason):
        check_update(tamper(_w(1.0)), ref)


def test_difference_norm_ignores_integer_buffers() -> None:
    a = {"x": np.array([3.0, 4.0], np.float32), "n": np.array(5, np.int64)}
    b = {"x": np.array([0.0, 0.0], np.float32), "n": np.array(0, np.int64)}
    assert difference_norm(a, b) == pytest.approx(5.0)


def test_fedavg_weights_by_training_cases() -> None:
    s = make_strategy(StrategyConfig(name="fedavg"), local_epochs=1)
    ref = {"x": np.zeros(2, np.float32)}
    ups = [
        SiteUpdate("a", {"x": np.array([1.0, 1.0], np.float32)}, n_train=1, train_loss=0.1),
        SiteUpdate("b", {"x": np.array([5.0, 9.0], np.float32)}, n_train=3, train_loss=0.1),
    ]
    np.testing.assert_allclose(s.aggregate(1, ref, ups)["x"], [4.0, 7.0])
    plain = make_strategy(StrategyConfig(name="fedavg", params={"weighted": False}), 1)
    np.testing.assert_allclose(plain.aggregate(1, ref, ups)["x"], [3.0, 5.0])
    tasks = s.configure_round(1, ["a", "b"])
    assert set(tasks) == {"a", "b"} and all(t.train and t.validate for t in tasks.values())


def test_strategy_registry_errors() -> None:
    assert "fedavg" in STRATEGIES
    with pytest.raises(FedsegError, match="unknown; choose one of"):
        make_strategy(StrategyConfig(name="nope"), 1)
    with pytest.raises(FedsegError, match=r"strategy\.params\.bogus"):
        make_strategy(StrategyConfig(name="fedavg", params={"bogus": 1}), 1)


def test_without_one_is_the_mean_of_the_others() -> None:
    rng = np.random.default_rng(3)
    members = [{"w": rng.normal(size=(4, 3)).astype(np.float32),
                "n": rng.integers(0, 9, size=5).astype(np.int64)} for _ in range(4)]  # fmt: skip
    weights = [3.0, 1.0, 5.0, 2.0]
    mean = weighted_average(members, weights)
    for i in range(4):
        rest = [m for j, m in enumerate(members) if j != i]
        expect = weighted_average(rest, [w for j, w in enumerate(weights) if j != i])
        got = without_one(mean, sum(weights), members[i], weights[i])
        assert got["w"].dtype == np.float32 and got["n"].dtype == np.int64
        np.testing.assert_allclose(got["w"], expect["w"], atol=1e-5)
        assert np.abs(got["n"] - expect["n"]).max() <= 1  # integers rounded both ways
    with pytest.raises(ValueError, match=r"cannot take weight 5\.0 out"):
        without_one(mean, 5.0, members[0], 5.0)  # nothing would be left
