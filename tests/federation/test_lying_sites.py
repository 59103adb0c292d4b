"""A site that lies in its reply, through the round loop: the four lies of issue 17.

site3 lies (``compare_plans.attacks.poison_reply``, the same lies ``benchmarks/attacks.py``
measures with real training): n_train = 10^9, its update scaled by 1e30, Dice 1.0 over
10,000 cases for model 0, n_train = -5. With the plan's default bounds its reply is
``rejected`` with a one-line reason, the round completes with the other two, ``best.pt``
is not the lied-about round, and a restarted run finishes; with the bounds off, the same
lies take the federation over or halt it (what the bounds prevent).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.federation.commands.compare_plans.attacks import Poison, poison_reply
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged, initial_weights
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.model_file import load_model, weights_hash
from fedseg.plan import load_plan
from fedseg.run_folder import BEST_MODEL, DeclaredCases, RunStatus, SiteRoundStatus, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import (
    SITES,
    ArrayTransport,
    DyingTransport,
    float_keys,
    tiny_plan,
    write_run,
)

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 3, "site2": 6, "site3": 5}  # with -5 the sum stays positive
#: FedAvg of the two honest sites: each round moves the floats by this
HONEST_STEP = (3 * 0.1 + 6 * 0.2) / 9

LIES = {
    "n_train=1e9": (Poison(site="site3", kind="n_train", n_train=10**9),
                    "reports 1000000000 training cases, more than the 5 it declared"),
    "scale=1e30": (Poison(site="site3", kind="scale", scale=1e30),
                   "x the round's median change, over bounds.reject_norm_ratio 1000"),
    "dice=1@10000": (Poison(site="site3", kind="dice", dice=1.0),
                     "validation .*/dice over 10000 cases, declared 2 validation cases"),
    "n_train=-5": (Poison(site="site3", kind="n_train", n_train=-5),
                   r"reports -5 training cases \(negative\)"),
}  # fmt: skip


class LyingTransport(DyingTransport):
    """``ArrayTransport`` whose ``poison.site`` lies in every reply (``poison_reply``); the
    aggregator "is killed" when round ``dies_in_round`` starts (``DyingTransport``)."""

    def __init__(self, poison: Poison, dies_in_round: int | None = None) -> None:
        super().__init__(dies_in_round, OFFSETS, N_TRAIN)
        self.poison = poison

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
    ) -> None:
        def lie(site: str, ex: Exchanged) -> None:
            if site == self.poison.site and isinstance(ex.result, TaskReply):
                poison_reply(self.poison, requests[site], ex.result)
            on_result(site, ex)

        super().exchange(requests, timeout_s, lie)


def _run(tmp_path: Path, **plan: object) -> Path:
    sites = {s: tmp_path / s for s in SITES}
    # every round model kept: the tests look at round 1's
    plan = {"rounds": 3, "retention": {"keep_every": None}, **plan}
    return write_run(tmp_path / "run", tiny_plan(sites, **plan))


def _lied_rounds(lie: str) -> set[int]:
    return {1} if lie.startswith("dice") else {1, 2, 3}  # the Dice lie is about model 0


@pytest.mark.parametrize("lie", LIES)
def test_a_lying_site_is_rejected_and_the_round_goes_on(tmp_path: Path, lie: str) -> None:
    poison, reason = LIES[lie]
    run = _run(tmp_path)
    Coordinator(run, LyingTransport(poison)).run()
    with RunStore(run) as store:
        assert store.meta.status() == RunStatus.DONE
        assert [r["status"] for r in store.rounds()] == ["done"] * 3
        liar = {s.round: s for s in store.site_rounds("site3")}
        for rnd in _lied_rounds(lie):
            assert liar[rnd].status == SiteRoundStatus.REJECTED, liar[rnd]
            err = liar[rnd].error or ""
            assert len(err.splitlines()) == 1 and re.search(reason, err), err
        for s in store.site_rounds():
            if s.site != "site3":
                assert s.status == SiteRoundStatus.OK
        # nothing of a reply that lied in its report is stored (the scaled update's
        # reply reported honestly: its validation counts, only its update is rejected)
        validated = {v.model_round for v in store.validation(site="site3")}
        lied_reports = set() if lie.startswith("scale") else _lied_rounds(lie)
        assert not validated & {r - 1 for r in lied_reports}
        best = store.meta.best()
        assert store.meta.declared()["site3"] == DeclaredCases(n_train=5, n_val=2)
    # round 1 aggregated the honest sites only
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    w1 = load_model(model_path(run, 1)).weights
    for k in float_keys(w0):
        np.testing.assert_allclose(w1[k], w0[k] + HONEST_STEP, rtol=1e-5, atol=1e-5)
    # best.pt is a model every validating site validated, never the lied-about model 0
    assert best is not None and (run / BEST_MODEL).is_file()
    if lie.startswith("dice"):
        assert best.model_round != 0
    assert weights_hash(load_model(run / BEST_MODEL).weights) == weights_hash(
        load_model(model_path(run, best.model_round)).weights
    )


@pytest.mark.parametrize("lie", LIES)
def test_a_run_with_a_lying_site_resumes(tmp_path: Path, lie: str) -> None:
    poison, _ = LIES[lie]
    run = _run(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        Coordinator(run, LyingTransport(poison, dies_in_round=2)).run()
    Coordinator(run, LyingTransport(poison)).run()
    with RunStore(run) as store:
        assert store.meta.status() == RunStatus.DONE
        assert [r["status"] for r in store.rounds()] == ["done"] * 3
        assert {s.round for s in store.site_rounds("site3")
                if s.status == SiteRoundStatus.REJECTED} == _lied_rounds(lie)  # fmt: skip


@pytest.mark.parametrize(
    ("lie", "harm"),
    [("n_train=1e9", "takes over"), ("scale=1e30", "takes over"),
     ("dice=1@10000", "best"), ("n_train=-5", "halts")],
)  # fmt: skip
def test_without_the_bounds_each_lie_harms_the_federation(
    tmp_path: Path, lie: str, harm: str
) -> None:
    """What the bounds prevent (plan ``bounds.enabled: false``, for measurements only)."""
    poison, _ = LIES[lie]
    run = _run(tmp_path, bounds={"enabled": False})
    if harm == "halts":
        with pytest.raises(ValueError, match="aggregation weights must be >= 0"):
            Coordinator(run, LyingTransport(poison)).run()
        with RunStore(run) as store:
            assert store.meta.status() == RunStatus.FAILED and store.last_done_round() == 0
        return
    Coordinator(run, LyingTransport(poison)).run()
    with RunStore(run) as store:
        best = store.meta.best()
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    w1 = load_model(model_path(run, 1)).weights
    drift = max(float(np.abs(w1[k] - w0[k]).max()) for k in float_keys(w0))
    if harm == "best":
        assert best is not None and best.model_round == 0  # the untrained model
    else:
        assert drift > 0.39  # the liar's update (+0.4, or 1e30x) is (nearly) all of it


def test_declared_counts_are_fixed_for_the_run(tmp_path: Path) -> None:
    run = _run(tmp_path)

    with pytest.raises(RuntimeError):
        Coordinator(run, DyingTransport(2, OFFSETS, N_TRAIN)).run()
    # site3 rejoins claiming ten times the cases, and reports them: rejected, every round
    bigger = {**N_TRAIN, "site3": 50}
    Coordinator(run, ArrayTransport(OFFSETS, bigger)).run()
    with RunStore(run) as store:
        assert store.meta.declared()["site3"] == DeclaredCases(n_train=5, n_val=2)
        by_round = {s.round: s for s in store.site_rounds("site3")}
        assert by_round[1].status == SiteRoundStatus.OK
        for rnd in (2, 3):
            assert by_round[rnd].status == SiteRoundStatus.REJECTED
            assert "reports 50 training cases, more than the 5 it declared" in (
                by_round[rnd].error or ""
            )
        assert store.meta.status() == RunStatus.DONE
        assert any("now declares 50 training" in m for _, _, m in store.events())


def test_an_absurd_declaration_is_not_believed(tmp_path: Path) -> None:
    run = _run(tmp_path)
    t = ArrayTransport(OFFSETS, N_TRAIN)
    t.declare["site3"] = DeclaredCases(n_train=10**9, n_val=2)
    t.n_train = {**N_TRAIN, "site3": 10**9}
    Coordinator(run, t).run()
    with RunStore(run) as store:
        assert "site3" not in store.meta.declared()
        srs = store.site_rounds("site3")
        assert {s.status for s in srs} == {SiteRoundStatus.REJECTED}
        assert all("claims 1000000000 training cases, outside [0, 100000]" in (s.error or "")
                   for s in srs)  # fmt: skip
        assert store.meta.status() == RunStatus.DONE
        assert any("declaration not believed: claims 1000000000 training cases" in m
                   for _, _, m in store.events())  # fmt: skip


def test_a_site_that_declared_nothing_declares_with_its_first_reply(tmp_path: Path) -> None:
    """Its data folder did not read at the hello (e.g. it was being restored)."""
    run = _run(tmp_path)
    t = ArrayTransport(OFFSETS, N_TRAIN)
    del t.declare["site3"]
    Coordinator(run, t).run()
    with RunStore(run) as store:
        assert store.meta.declared()["site3"] == DeclaredCases(n_train=5, n_val=2)
        assert {s.status for s in store.site_rounds("site3")} == {SiteRoundStatus.OK}
        assert any("site3 declared 5 training and 2 validation cases (its first reply)" in m
                   for _, _, m in store.events())  # fmt: skip


def test_a_large_honest_update_is_clipped_not_rejected(tmp_path: Path) -> None:
    run = _run(tmp_path, rounds=1)
    offsets = {"site1": 0.01, "site2": 0.02, "site3": 0.2}  # 10x the median change
    Coordinator(run, ArrayTransport(offsets, N_TRAIN)).run()
    with RunStore(run) as store:
        s3 = store.site_rounds("site3")[0]
    assert s3.status == SiteRoundStatus.OK and s3.extra is not None
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    n = sum(int(w0[k].size) for k in float_keys(w0))
    assert s3.extra["clipped_to"] == pytest.approx(3 * 0.02 * np.sqrt(n), rel=1e-3)
    assert s3.update_norm == pytest.approx(0.2 * np.sqrt(n), rel=1e-3)  # the raw change
    w1 = load_model(model_path(run, 1)).weights
    step = (3 * 0.01 + 6 * 0.02 + 5 * 0.06) / 14  # site3's +0.2 clipped to +0.06
    for k in float_keys(w0):
        np.testing.assert_allclose(w1[k], w0[k] + step, rtol=1e-4, atol=1e-4)
