"""Partial participation and the straggler cut-off at the study's scale (71 sites), with the
in-process ``ArrayTransport`` on a ``FakeClock`` (deterministic, no sleeping): who is asked
under ``validators``, the round-score rule over the sites asked, the cut after quorum and
grace, the cut site's record, and the busy site passed over by the next draw."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import PlanError
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.federation.rounds.participation import sample_sites
from fedseg.federation.rounds.straggler import quorum_count
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.model.model_file import load_model
from fedseg.plan import PlanConfig, StragglerConfig, StrategyConfig
from fedseg.run_folder import CUT_AFTER_QUORUM, SiteRoundStatus, model_path
from fedseg.tracking.curves import federation_curve, round_scores, site_curves
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import ArrayTransport, FakeClock, tiny_plan, write_run

N = 71
SITES = [f"s{i:02d}" for i in range(N)]
K = 10  # trainers per round


def _plan(tmp_path: Path, rounds: int = 3, **kw: object) -> PlanConfig:
    params = {"sites_per_round": K, **kw.pop("params", {})}  # type: ignore[dict-item]
    return tiny_plan(
        {s: tmp_path / "data" / s for s in SITES}, rounds=rounds, min_sites=1,
        strategy={"name": "fedavg", "params": params},
        cross_site={"enabled": False}, alarms={"enabled": False}, **kw,
    )  # fmt: skip


def _transport(**kw: object) -> ArrayTransport:
    offsets = {s: 0.001 * i for i, s in enumerate(SITES)}
    return ArrayTransport(offsets, dict.fromkeys(SITES, 1), **kw)  # type: ignore[arg-type]


def _drawn(rnd: int, seed: int = 0, busy: tuple[str, ...] = ()) -> list[str]:
    return sample_sites(SITES, rnd, seed, count=K, busy=busy)


def _rows(run: Path) -> dict[int, dict[str, tuple[str, str | None]]]:
    with RunStore(run) as store:
        out: dict[int, dict[str, tuple[str, str | None]]] = {}
        for r in store.site_rounds():
            out.setdefault(r.round, {})[r.site] = (r.status, r.error)
        return out


def test_validators_trainers_asks_only_the_drawn_sites(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path, params={"validators": "trainers"}))
    t = _transport()
    Coordinator(run, t).run()
    for rnd in (1, 2, 3):
        asked = t.requests[rnd - 1]
        assert list(asked) == _drawn(rnd)
        assert all(r.epochs == 1 and r.validate for r in asked.values())
        rows = _rows(run)[rnd]
        assert len(rows) == N
        assert {s for s, (st, _) in rows.items() if st == SiteRoundStatus.NOT_ASKED} == (
            set(SITES) - set(asked)
        )
    assert len(t.requests[3]) == N  # the final validation asks everyone
    with RunStore(run) as store:
        scores = round_scores(store)
        # each model round is scored on the sites asked; the old rule found only model 3
        assert list(scores) == [0, 1, 2, 3]
        assert scores[1].n == 2 * K and scores[3].n == 2 * N
        assert list(federation_curve(site_curves(store))) == [3]
        assert store.meta.best() is not None


def test_validators_every_k_asks_the_others_every_kth_round(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path, rounds=4, params={"validators": "every:2"}))
    t = _transport()
    Coordinator(run, t).run()
    assert [len(r) for r in t.requests] == [N, K, N, K, N]  # rounds 1, 3 and the final: all
    for rnd in (1, 3):
        tasks = t.requests[rnd - 1]
        assert {s for s, r in tasks.items() if r.epochs > 0} == set(_drawn(rnd))
        assert all(r.validate for r in tasks.values())
    with RunStore(run) as store:
        scores = round_scores(store)
        assert list(scores) == [0, 1, 2, 3, 4]  # without the rule change: only 0, 2, 4
        assert [scores[m].n for m in range(5)] == [2 * N, 2 * K, 2 * N, 2 * K, 2 * N]
        assert list(federation_curve(site_curves(store))) == [0, 2, 4]


def test_validators_all_is_todays_behaviour(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path, rounds=1))
    t = _transport()
    Coordinator(run, t).run()
    tasks = t.requests[0]
    assert list(tasks) == SITES
    assert {s for s, r in tasks.items() if r.epochs > 0} == set(_drawn(1))
    assert SiteRoundStatus.NOT_ASKED not in {st for st, _ in _rows(run)[1].values()}


@pytest.mark.parametrize("bad", ["some", "every:0", "every:x", "every", "trainers "])
def test_bad_validators_is_one_plan_line(bad: str) -> None:
    with pytest.raises(PlanError, match=r"^strategy\.params\.validators: .*every:K") as err:
        make_strategy(StrategyConfig(name="fedavg", params={"validators": bad}), 1)
    assert "\n" not in str(err.value)


def _straggler_run(tmp_path: Path, seed: int, slow: dict[str, float], rounds: int = 3,
                   validators: str = "trainers") -> tuple[Path, ArrayTransport]:  # fmt: skip
    plan = _plan(tmp_path, rounds=rounds, straggler={"quorum": 0.8, "grace_s": 30},
                 params={"validators": validators, "participation_seed": seed})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    clock = FakeClock()
    delays = {s: 20.0 for s in SITES} | slow  # every site answers in 20 s, the slow later
    t = _transport(delays=delays, clock=clock)
    Coordinator(run, t, clock=clock).run()
    return run, t


def _seed_with_overlap() -> tuple[int, list[str]]:
    """A participation seed whose rounds 1 and 2 draw at least two common sites: the slow
    ones, so round 2 would draw them were they not busy."""
    for seed in range(200):
        both = sorted(set(_drawn(1, seed)) & set(_drawn(2, seed)))
        if len(both) >= 2:
            return seed, both[:2]
    raise AssertionError("no seed draws two sites twice")


def test_straggler_cut_after_quorum_and_grace_and_the_busy_site_is_not_drawn(
    tmp_path: Path,
) -> None:
    seed, slow = _seed_with_overlap()
    # the slow sites answer round 1 at 60 s: after the cut (quorum at 20 s + 30 s grace)
    run, t = _straggler_run(tmp_path, seed, dict.fromkeys(slow, 60.0))
    assert quorum_count(StragglerConfig(quorum=0.8), K) == 8
    # round 1: 8 of 10 delivered at 20 s, the exchange ended 30 s later, not at the timeout
    assert t.elapsed[0] == 50.0
    rows = _rows(run)
    for s in slow:
        assert rows[1][s] == (SiteRoundStatus.TIMEOUT, "cut after quorum (8 of 10)")
    assert sum(st == SiteRoundStatus.OK for st, _ in rows[1].values()) == 8
    with RunStore(run) as store:
        cut = [r for r in store.site_rounds() if r.round == 1 and r.site in slow]
        assert all(r.extra == {CUT_AFTER_QUORUM: [8, 10]} for r in cut)
        assert store.rounds()[0]["n_sites"] == 8
        logs = [e[2] for e in store.events()]
    # round 2 (starts at 50 s, the late replies come at 60 s): busy, passed over by the draw
    assert list(t.requests[1]) == _drawn(2, seed, busy=tuple(slow))
    assert len(t.requests[1]) == K and not set(slow) & set(t.requests[1])
    assert set(slow) < set(_drawn(2, seed))  # without the busy rule they would be drawn
    for s in slow:
        status, why = rows[2][s]
        assert status == SiteRoundStatus.NOT_ASKED and why is not None and "busy" in why
    # round 3 (starts at 70 s): their late replies were pulled, they are free again
    cut3 = {s for s, (_, why) in rows[3].items() if (why or "").startswith("cut")}
    assert set(t.late) == cut3  # only round 3's own cuts are out now
    assert all(not (why or "").startswith("busy") for _, why in rows[3].values())
    assert sum("answered its round 1 task late" in m for m in logs) == 2
    # the round with the cut is still a candidate: a cut site was not waited for
    with RunStore(run) as store:
        assert 1 in round_scores(store)


def test_straggler_never_answering_site_stays_busy(tmp_path: Path) -> None:
    seed, slow = _seed_with_overlap()
    run, t = _straggler_run(tmp_path, seed, {slow[0]: math.inf}, rounds=3)
    assert t.elapsed[0] == 50.0
    rows = _rows(run)
    assert rows[1][slow[0]] == (SiteRoundStatus.TIMEOUT, "cut after quorum (9 of 10)")
    for rnd in (2, 3):
        assert rows[rnd][slow[0]][0] == SiteRoundStatus.NOT_ASKED
        assert slow[0] not in t.requests[rnd - 1]
    assert t.late == {slow[0]: math.inf}


def test_no_quorum_waits_for_the_timeout_and_all_in_time_ends_at_once(tmp_path: Path) -> None:
    # 3 of 10 never answer: 7 < 8, no quorum, the round waits its full timeout (240 s)
    drawn = _drawn(1)
    run, t = _straggler_run(tmp_path, 0, dict.fromkeys(drawn[:3], math.inf), rounds=1)
    assert t.elapsed[0] == 240.0
    rows = _rows(run)
    assert all(rows[1][s] == (SiteRoundStatus.TIMEOUT, "no reply") for s in drawn[:3])
    # everyone in time: no grace is waited
    _, t2 = _straggler_run(tmp_path / "b", 0, {}, rounds=1)
    assert t2.elapsed[0] == 20.0


def test_cut_validators_too_under_validators_all(tmp_path: Path) -> None:
    """With every site validating, the non-trainers still out at the cut are cut as well
    (the quorum counts trainers only) and are busy next round."""
    drawn = _drawn(1)
    other = next(s for s in SITES if s not in drawn)
    run, t = _straggler_run(tmp_path, 0, {other: 1000.0}, rounds=2, validators="all")
    assert t.elapsed[0] == 50.0
    rows = _rows(run)
    assert rows[1][other] == (SiteRoundStatus.TIMEOUT, "cut after quorum (10 of 10)")
    assert other not in t.requests[1] and rows[2][other][0] == SiteRoundStatus.NOT_ASKED
    assert len(t.requests[1]) == N - 1


def test_straggler_is_refused_for_sequential_plans(tmp_path: Path) -> None:
    plan = tiny_plan({s: tmp_path / s for s in SITES[:3]}, strategy={"name": "cyclic"},
                     straggler={"quorum": 0.5})  # fmt: skip
    with pytest.raises(PlanError, match="trains one site per round"):
        Coordinator(write_run(tmp_path / "run", plan), _transport())


def test_cut_model_is_the_mean_of_the_delivered_updates(tmp_path: Path) -> None:
    seed, slow = _seed_with_overlap()
    run, _ = _straggler_run(tmp_path, seed, dict.fromkeys(slow, 60.0), rounds=1)
    w0, w1 = (load_model(model_path(run, r)).weights for r in (0, 1))
    used = [s for s in _drawn(1, seed) if s not in slow]
    step = np.mean([0.001 * SITES.index(s) for s in used])
    k = next(k for k, v in w0.items() if v.dtype.kind == "f")
    np.testing.assert_allclose(w1[k], w0[k] + step, atol=1e-6)


def test_cross_site_and_alarms_with_validators_trainers(tmp_path: Path) -> None:
    """Cross-site validation asks only the round's validators to evaluate (the others get no
    message), each kept model still to ``evaluators_per_model`` of them; the alarms run
    every round on the sparse curves and flag nobody for not being asked."""
    plan = _plan(tmp_path, rounds=3, params={"validators": "trainers"})
    plan = plan.model_copy(update={
        "cross_site": plan.cross_site.model_copy(update={"enabled": True, "models_per_round": 4}),
        "alarms": plan.alarms.model_copy(update={"enabled": True}),
    })  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    t = _transport()
    Coordinator(run, t).run()
    for rnd in (2, 3):
        asked = t.requests[rnd - 1]
        carried = {s for s, r in asked.items() if r.cross}
        assert carried and carried <= set(_drawn(rnd))
        per_model: dict[str, int] = {}
        for r in asked.values():
            for label in r.cross:
                per_model[label] = per_model.get(label, 0) + 1
        assert len(per_model) == 4 and set(per_model.values()) == {3}  # 3 evaluators each
    with RunStore(run) as store:  # (ArrayTransport's sites send no cross summaries back)
        assert store.alarms(observations=True) == []
        assert [r["status"] for r in store.rounds()] == ["done"] * 3
