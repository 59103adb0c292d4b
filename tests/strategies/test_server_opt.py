"""FedAvgM, FedAdam, FedYogi and FedAdagrad against updates written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.plan import StrategyConfig


def _upd(site: str, vals: list[float], n: int) -> SiteUpdate:
    return SiteUpdate(site, {"w": np.array(vals, np.float64), "k": np.array(7, np.int64)}, n, 0.0)


X0 = {"w": np.array([1.0, -2.0]), "k": np.array(5, np.int64)}


def _round(strat, x, deltas_by_site):  # type: ignore[no-untyped-def]
    ups = [_upd(s, list(x["w"] + d), n) for s, (d, n) in deltas_by_site.items()]
    return strat.aggregate(1, x, ups)


def test_fedavgm_momentum() -> None:
    strat = make_strategy(StrategyConfig(name="fedavgm", params={"beta": 0.5, "server_lr": 2.0}), 1)
    # round 1: sites move by +1 (1 case) and +4 (2 cases): weighted delta 3 on both coordinates
    x1 = _round(strat, X0, {"a": (np.array([1.0, 1.0]), 1), "b": (np.array([4.0, 4.0]), 2)})
    # v1 = 3; x1 = x0 + 2 * 3
    np.testing.assert_allclose(x1["w"], [7.0, 4.0])
    assert x1["k"] == 7  # counters take the FedAvg mean, not the momentum step
    # round 2: delta 1 -> v2 = 0.5 * 3 + 1 = 2.5; x2 = x1 + 2 * 2.5
    x2 = _round(strat, x1, {"a": (np.array([1.0, 1.0]), 1)})
    np.testing.assert_allclose(x2["w"], [12.0, 9.0])


def _adaptive_by_hand(kind: str, deltas: list[float], lr: float, b1: float, b2: float,
                      tau: float) -> list[float]:  # fmt: skip
    """Scalar Reddi et al. 2021 Algorithm 2, one coordinate, starting at x = 0."""
    x = m = v = 0.0
    xs = []
    for d in deltas:
        m = b1 * m + (1 - b1) * d
        if kind == "adagrad":
            v = v + d * d
        elif kind == "adam":
            v = b2 * v + (1 - b2) * d * d
        else:
            v = v - (1 - b2) * d * d * math.copysign(1.0, v - d * d) if v != d * d else v
        x = x + lr * m / (math.sqrt(v) + tau)
        xs.append(x)
    return xs


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_server_optimizers(name: str) -> None:
    params = {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01}
    strat = make_strategy(StrategyConfig(name=name, params=params), 1)
    deltas = [0.5, -0.2, 0.3]
    expect = _adaptive_by_hand(name.removeprefix("fed"), deltas, 0.1, 0.9, 0.99, 0.01)
    x = {"w": np.array([0.0, 0.0]), "k": np.array(5, np.int64)}
    for i, d in enumerate(deltas):
        # two sites, the same move: the FedAvg delta is d
        x = _round(strat, x, {"a": (np.array([d, 2 * d]), 1), "b": (np.array([d, 2 * d]), 3)})
        assert x["w"][0] == pytest.approx(expect[i], rel=1e-12)
    # the second coordinate moves 2x: Adam-like steps are scale-free only up to tau
    assert x["w"][1] != pytest.approx(2 * x["w"][0])
    # state round trip: a restarted strategy continues identically
    state = strat.state_dict()
    assert {"m/w", "v/w"} <= set(state)
    again = make_strategy(StrategyConfig(name=name, params=params), 1)
    again.load_state_dict(state)
    nxt = {"a": (np.array([0.1, 0.1]), 1)}
    np.testing.assert_array_equal(_round(strat, x, nxt)["w"], _round(again, x, nxt)["w"])


def test_yogi_differs_from_adam_after_a_smaller_step() -> None:
    adam = _adaptive_by_hand("adam", [1.0, 0.1], 0.1, 0.9, 0.99, 1e-3)
    yogi = _adaptive_by_hand("yogi", [1.0, 0.1], 0.1, 0.9, 0.99, 1e-3)
    assert adam[0] == pytest.approx(yogi[0]) and adam[1] != pytest.approx(yogi[1])
