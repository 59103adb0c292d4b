"""Median, trimmed mean and Krum against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.federation.rounds.strategies.robust import (
    Krum,
    coordinate_median,
    krum,
    krum_scores,
    krum_select,
    n_trimmed,
    trimmed_mean,
)
from fedseg.plan import StrategyConfig


def _w(*vals: float, dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"w": np.array(vals, dtype=dtype)}


G = _w(0.0, 0.0, 0.0)


def test_median_odd_and_even() -> None:
    ups = [_w(1, 5, 3), _w(2, 2, 2), _w(9, 0, 4)]
    np.testing.assert_array_equal(coordinate_median(G, ups)["w"], [2, 2, 3])
    ups.append(_w(4, 1, 100))  # even: mean of the middle two -> (2+4)/2, (1+2)/2, (3+4)/2
    np.testing.assert_array_equal(coordinate_median(G, ups)["w"], [3, 1.5, 3.5])


def test_median_ignores_one_huge_update_and_keeps_dtypes() -> None:
    ups = [_w(1, 1, 1), _w(1.2, 0.8, 1), _w(1e6, -1e6, 1e6)]
    out = coordinate_median(G, ups)
    np.testing.assert_allclose(out["w"], [1.2, 0.8, 1])
    assert out["w"].dtype == np.float32
    counters = [{"n": np.array([3], np.int64)}, {"n": np.array([4], np.int64)},
                {"n": np.array([8], np.int64)}]  # fmt: skip
    res = coordinate_median({"n": np.array([0], np.int64)}, counters)["n"]
    assert res.dtype == np.int64 and res[0] == 4


def test_trimmed_mean_by_hand() -> None:
    ups = [_w(1, 10, 0), _w(2, 20, 0), _w(3, 30, 0), _w(100, -50, 4)]
    # beta 0.25, n 4 -> drop 1 at each end: coordinate 0 keeps 2, 3; coordinate 1 keeps 10, 20
    assert n_trimmed(4, 0.25) == 1
    np.testing.assert_allclose(trimmed_mean(G, ups, 0.25)["w"], [2.5, 15, 0])
    # beta 0 is the plain mean
    np.testing.assert_allclose(trimmed_mean(G, ups, 0.0)["w"], [26.5, 2.5, 1])
    # beta 0.2 with n 4 trims floor(0.8) = 0
    assert n_trimmed(4, 0.2) == 0 and n_trimmed(10, 0.2) == 2 and n_trimmed(3, 0.49) == 1


def test_krum_scores_by_hand() -> None:
    pts = [(0, 0), (1, 0), (0, 2), (3, 3), (10, 10)]
    ups = [{"w": np.array(p, np.float32)} for p in pts]
    # squared distances: ab 1, ac 4, ad 18, ae 200, bc 5, bd 13, be 181, cd 10, ce 164, de 98
    # f = 1, n = 5 -> sum of the 2 nearest: a 1+4, b 1+5, c 4+5, d 10+13, e 98+164
    np.testing.assert_allclose(krum_scores(ups, f=1), [5, 6, 9, 23, 262])
    assert krum_select(ups, f=1) == [0]
    np.testing.assert_allclose(krum({"w": np.zeros(2, np.float32)}, ups, f=1)["w"], [0, 0])
    # multi-Krum m = 2: plain mean of a and b
    np.testing.assert_allclose(krum({"w": np.zeros(2, np.float32)}, ups, f=1, m=2)["w"], [0.5, 0])
    # f = 2 -> 1 nearest: a 1, b 1, c 4, d 10, e 98; tie a/b goes to the lower index
    np.testing.assert_allclose(krum_scores(ups, f=2), [1, 1, 4, 10, 98])
    assert krum_select(ups, f=2, m=3) == [0, 1, 2]


def test_krum_strategy_records_the_chosen_site() -> None:
    strat = make_strategy(StrategyConfig(name="krum", params={"f": 1}), 1)
    pts = [(0, 0), (1, 0), (0, 2), (3, 3), (10, 10)]
    updates = [SiteUpdate(f"s{i}", {"w": np.array(p, np.float32)}, 3, 0.1)
               for i, p in enumerate(pts)]  # fmt: skip
    out = strat.aggregate(1, {"w": np.zeros(2, np.float32)}, updates)
    np.testing.assert_allclose(out["w"], [0, 0])
    assert isinstance(strat, Krum) and strat.selected == ["s0"]


@pytest.mark.parametrize(
    ("name", "params", "msg"),
    [("trimmed-mean", {"beta": 0.5}, "beta"), ("krum", {"f": -1}, "f"),
     ("median", {"fraction": 0.5, "sites_per_round": 2}, "not both")],
)  # fmt: skip
def test_bad_params_are_one_line_errors(name: str, params: dict, msg: str) -> None:
    from fedseg.errors import FedsegError

    with pytest.raises(FedsegError, match=msg):
        make_strategy(StrategyConfig(name=name, params=params), 1)
