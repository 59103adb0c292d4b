"""``fastest-k`` and ``select-utility`` (``strategies.site_selection``): what each selects on a
hand-made set of sites (the utility, the system penalty above the deadline, the exploration
of unseen sites by the participation draw, busy sites passed over), and, through the round
loop, that the coordinator hands a strategy the case counts the sites declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.federation.rounds.participation import sample_sites
from fedseg.federation.rounds.sim_time import site_round_time, site_speeds
from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.federation.rounds.strategies.site_selection import (
    SelectUtility,
    expected_times,
    fastest,
    select_by_utility,
    utility,
)
from fedseg.model.weights import load_arrays, save_arrays
from fedseg.plan import StrategyConfig
from fedseg.tracking.store import RunStore
from tests.strategies.strategy_helpers import ArrayTransport, tiny_plan, write_run

#: hand-made expected round times (s) and what select-utility has seen: (n_train, loss)
TIMES = {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0, "e": 50.0, "f": 60.0}
SEEN = {"a": (10, 0.1), "b": (10, 0.5), "c": (20, 0.5), "d": (40, 0.5)}


def test_fastest_takes_the_k_smallest_free_times() -> None:
    assert fastest(TIMES, 3) == ["a", "b", "c"]
    assert fastest(TIMES, 3, busy={"b"}) == ["a", "c", "d"]
    assert fastest({"x": 1.0, "w": 1.0, "y": 0.5}, 2) == ["y", "w"]  # ties by name
    assert fastest(TIMES, 10) == list(TIMES)


def test_utility_is_cases_times_loss_with_the_penalty_above_the_deadline() -> None:
    assert utility(10, 0.5, t=20, deadline_s=30, alpha=2) == 5.0
    assert utility(40, 0.5, t=40, deadline_s=30, alpha=2) == pytest.approx(20 * 0.75**2)
    assert utility(40, 0.5, t=40, deadline_s=30, alpha=0) == 20


def _select(**kw: object) -> list[str]:
    args: dict[str, object] = dict(times=TIMES, seen=SEEN, k=3, rnd=2, seed=0, alpha=2.0,
                                   epsilon=0.34, deadline_s=None)  # fmt: skip
    args.update(kw)
    return select_by_utility(**args)  # type: ignore[arg-type]


def test_select_by_utility_on_hand_made_sites() -> None:
    explored = sample_sites(["e", "f"], 2, 0, count=1)
    # deadline = 3rd fastest (30 s); utilities a 1, b 5, c 10, d 20 x (30/40)^2 = 11.25:
    # d and c by utility, round(0.34 x 3) = 1 slot explores e or f by the participation draw
    assert _select() == sorted(["c", "d", *explored])
    assert _select() == _select()  # deterministic given the seed
    # a harsh penalty drops the slow d below b (20 x 0.75^10 = 1.1 < 5)
    assert _select(alpha=10.0) == sorted(["b", "c", *explored])
    # no penalty when the deadline is above everyone's time
    assert _select(deadline_s=100.0, alpha=10.0) == sorted(["c", "d", *explored])
    # a busy site is passed over; the deadline is then the 3rd fastest free site (d, 40 s)
    assert _select(busy={"c"}) == sorted(["b", "d", *sample_sites(["e", "f"], 2, 0, count=1)])
    # no exploration: the three best seen
    assert _select(epsilon=0.0) == ["b", "c", "d"]


def test_select_by_utility_explores_never_seen_sites() -> None:
    # nothing seen yet: every slot explores, the participation draw itself
    assert _select(seen={}, rnd=1) == sample_sites(list(TIMES), 1, 0, count=3)
    assert _select(seen={}, rnd=1, epsilon=0.0) == sample_sites(list(TIMES), 1, 0, count=3)
    # one seen site cannot fill two exploitation slots: the rest explore
    only_a = _select(seen={"a": (10, 0.1)}, epsilon=0.0)
    assert "a" in only_a and len(only_a) == 3
    assert set(only_a) - {"a"} == set(sample_sites(list("bcdef"), 2, 0, count=2))
    # everyone seen: no exploration whatever epsilon says
    full = {s: (10, 0.5) for s in TIMES}
    assert _select(seen=full, epsilon=1.0, deadline_s=1e9) == ["a", "b", "c"]
    # other rounds draw other unseen sites: over 20 rounds both e and f are explored
    assert {s for r in range(1, 21) for s in _select(rnd=r)} >= {"e", "f"}


CASES = {"a": (2, 1), "b": (40, 10), "c": (3, 1), "d": (80, 20), "e": (4, 1)}


def _strategy(name: str, **params: object) -> SelectUtility:
    strat = make_strategy(
        StrategyConfig(name=name, params={"sites_per_round": 2, **params}), local_epochs=1
    )
    strat.set_site_cases(CASES)
    return strat  # type: ignore[return-value]


def _trainers(strat: SelectUtility, rnd: int, busy: frozenset[str] = frozenset()) -> list[str]:
    return sorted(s for s, t in strat.configure_round(rnd, list(CASES), busy).items() if t.train)


def test_fastest_k_takes_the_sites_with_the_smallest_expected_time() -> None:
    strat = _strategy("fastest-k")
    speeds = site_speeds({s: c[0] for s, c in CASES.items()}, 0)
    times = {s: site_round_time(speeds[s], *CASES[s], 1) for s in CASES}
    assert expected_times(list(CASES), CASES, 1, 0) == times
    want = sorted(sorted(CASES, key=times.__getitem__)[:2])
    assert _trainers(strat, 1) == _trainers(strat, 7) == want
    assert not {"b", "d"} & set(want)  # 10-40x the cases of the small sites: never fastest
    # every other site validates (validators: all), a busy one is passed over
    tasks = strat.configure_round(1, list(CASES), frozenset({want[0]}))
    assert want[0] not in tasks and sum(t.train for t in tasks.values()) == 2
    # an undeclared site counts as the median declared one
    assert expected_times(["a", "z"], {"a": (2, 1)}, 1, 0)["z"] > 0


def test_select_utility_learns_losses_and_keeps_them_across_a_restart(tmp_path: Path) -> None:
    strat = _strategy("select-utility", epsilon=0.5)
    first = _trainers(strat, 1)
    assert first == sample_sites(list(CASES), 1, 0, count=2)
    x = {"w": np.zeros(2, np.float32)}
    ups = [SiteUpdate(s, x, CASES[s][0], 0.2 + 0.1 * i) for i, s in enumerate(first)]
    ups.append(SiteUpdate("secure-sum", x, 5, float("nan")))  # no single loss: not seen
    strat.aggregate(1, x, ups)
    assert set(strat.seen) == set(first)
    # round 2: one slot exploits the better seen site, one explores an unseen one
    second = _trainers(strat, 2)
    times = expected_times(list(CASES), CASES, 1, 0)
    deadline = sorted(times.values())[1]
    best = max(first, key=lambda s: utility(*strat.seen[s], times[s], deadline, 2.0))
    assert best in second and len(set(second) - set(first)) == 1
    save_arrays(tmp_path / "s.npz", strat.state_dict())
    again = _strategy("select-utility", epsilon=0.5)
    again.load_state_dict(load_arrays(tmp_path / "s.npz"))
    assert again.seen == strat.seen and _trainers(again, 2) == second


def test_the_round_loop_hands_the_strategy_the_declared_cases(tmp_path: Path) -> None:
    sites = {s: tmp_path / s for s in CASES}
    plan = tiny_plan(sites, rounds=2, strategy={"name": "fastest-k",
                                                "params": {"sites_per_round": 2}},
                     cross_site={"enabled": False})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    transport = ArrayTransport(dict.fromkeys(CASES, 0.0), {s: c[0] for s, c in CASES.items()},
                               n_val={s: c[1] for s, c in CASES.items()})  # fmt: skip
    Coordinator(run, transport).run()
    times = expected_times(list(CASES), CASES, 1, 0)
    want = sorted(sorted(CASES, key=times.__getitem__)[:2])
    trained = [sorted(s for s, r in reqs.items() if r.epochs > 0) for reqs in transport.requests]
    assert trained == [want, want, []]  # the last: the final validation
    with RunStore(run) as store:  # the others validated
        assert {r.site for r in store.site_rounds() if r.round == 2} == set(CASES)
