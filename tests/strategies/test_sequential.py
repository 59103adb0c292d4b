"""Cyclic and single-pass plans through the real round loop (hand-made site answers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedseg.federation.rounds.coordinator import Coordinator, SiteFailure, initial_weights
from fedseg.federation.rounds.strategies.sequential import visit_order, visited_site
from fedseg.model.model_file import load_model
from fedseg.plan import load_plan
from fedseg.run_folder import LastTrained, RunStatus, SiteRoundStatus, model_path
from fedseg.tracking.store import RunStore
from tests.strategies.strategy_helpers import (
    SITES,
    ArrayTransport,
    float_keys,
    tiny_plan,
    write_run,
)

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


def _plan(tmp_path: Path, name: str, **params: object):  # type: ignore[no-untyped-def]
    sites = {s: tmp_path / s for s in SITES}
    return tiny_plan(sites, rounds=1, strategy={"name": name, "params": params})


def _trainers(t: ArrayTransport) -> list[str]:
    return [s for reqs in t.requests for s, r in reqs.items() if r.epochs > 0]


def test_visit_order_fixed_and_shuffled() -> None:
    assert visit_order(SITES, 0, "fixed", 0) == list(SITES)
    orders = [visit_order(SITES, c, "shuffled", 5) for c in range(6)]
    assert all(sorted(o) == sorted(SITES) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # reshuffled per cycle
    assert orders == [visit_order(SITES[::-1], c, "shuffled", 5) for c in range(6)]
    assert visited_site(SITES, 4, "fixed", 0) == ("site1", 1)


def test_cyclic_visits_each_site_in_turn_and_validates_every_visit(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path, "cyclic", cycles=2, epochs_per_visit=3))
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    assert _trainers(t) == list(SITES) * 2
    assert all(r.epochs == 3 for reqs in t.requests for r in reqs.values() if r.epochs > 0)
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    w6 = load_model(model_path(run, 6)).weights
    for k in float_keys(w0):  # the model carries every visit's change, twice round
        np.testing.assert_allclose(w6[k], w0[k] + 2 * sum(OFFSETS.values()), atol=1e-5)
    with RunStore(run) as store:
        assert [r["status"] for r in store.rounds()] == ["done"] * 6
        rows = store.validation(metric="dice", region="mean")
        assert {(r.model_round, r.site) for r in rows} == {(m, s) for m in range(7) for s in SITES}
        trained = [(sr.round, sr.site) for sr in store.site_rounds() if sr.n_train and
                   sr.train_loss is not None and sr.update_norm is not None]  # fmt: skip
        assert [s for _, s in sorted(trained)] == list(SITES) * 2
        assert store.meta.last_trained() == LastTrained(round=6, sites=["site3"])


def test_single_pass_skips_a_failed_site_with_a_log_line(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path, "single-pass"))
    fail = {"site2": SiteFailure(SiteRoundStatus.FAILED, "RuntimeError: disk full")}
    t = ArrayTransport(OFFSETS, N_TRAIN, fail=fail)
    Coordinator(run, t).run()
    assert _trainers(t) == list(SITES)
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    w3 = load_model(model_path(run, 3)).weights
    for k in float_keys(w0):
        np.testing.assert_allclose(w3[k], w0[k] + OFFSETS["site1"] + OFFSETS["site3"], atol=1e-5)
    with RunStore(run) as store:
        assert store.meta.status() == RunStatus.DONE
        logs = [m for _, _, m in store.events()]
        assert any("round 2: no update from site2; skipped" in m for m in logs)
        assert store.meta.last_trained() == LastTrained(round=3, sites=["site3"])


def test_optimizer_state_travels_with_the_model(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "cyclic", cycles=1, optimizer_state="average")
    run = write_run(tmp_path / "run", plan)
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    sent = [r for reqs in t.requests for r in reqs.values() if r.epochs > 0]
    assert sent[0].optimizer_state is None and sent[0].optimizer_mode == "average"
    # visit 2 starts from site1's state, visit 3 from site2's
    np.testing.assert_allclose(sent[1].optimizer_state["exp_avg/w"], OFFSETS["site1"])  # type: ignore[index]
    np.testing.assert_allclose(sent[2].optimizer_state["exp_avg/w"], OFFSETS["site2"])  # type: ignore[index]
