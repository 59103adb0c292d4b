"""The round loop without processes: hand-made site answers, real run store and model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.rounds.coordinator import (
    Coordinator,
    Exchanged,
    SiteFailure,
    initial_weights,
)
from fedseg.federation.rounds.tasks import TaskReply
from fedseg.model.model_file import load_model, weights_hash
from fedseg.plan import load_plan
from fedseg.run_folder import BEST_MODEL, RunStatus, SiteRoundStatus, model_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, DyingTransport, tiny_plan, write_run

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


def _sites(tmp_path: Path) -> dict[str, Path]:
    return {s: tmp_path / s for s in SITES}  # the array transport never reads them


def _float_keys(w: dict[str, np.ndarray]) -> list[str]:
    return [k for k, v in w.items() if v.dtype.kind == "f"]


def test_rounds_store_models_and_best(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path)))
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    with RunStore(run) as store:
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        assert store.meta.status() == RunStatus.DONE
        srs = store.site_rounds()
        assert {(s.round, s.site) for s in srs} == {(r, s) for r in (1, 2) for s in SITES}
        assert all(s.status == "ok" and s.bytes_sent == 10 and s.bytes_received == 20 for s in srs)
        assert {s.site: s.n_train for s in srs} == N_TRAIN
        rows = store.validation(metric="dice", region="ET")
        assert {(r.model_round, r.site) for r in rows} == {(m, s) for m in (0, 1, 2) for s in SITES}
        assert store.case_metrics() == []
        best = store.meta.best()
    # FedAvg by training cases: each round moves the floats by sum(n * offset) / sum(n)
    step = sum(N_TRAIN[s] * OFFSETS[s] for s in SITES) / sum(N_TRAIN.values())
    w2 = load_model(model_path(run, 2)).weights
    for k in _float_keys(w0):
        np.testing.assert_allclose(w2[k], w0[k] + 2 * step, rtol=1e-5, atol=1e-5)
    # the round-1 requests carried model 0, the round-2 requests model 1; the last is validation
    assert [sorted(r) for r in t.requests] == [sorted(SITES)] * 3
    assert t.requests[2]["site1"].epochs == 0 and t.requests[2]["site1"].model_round == 2
    # validation Dice is constant per site here, so the first model validated is the best
    assert best is not None and best.model_round == 0 and (run / BEST_MODEL).is_file()


class _WorkerTransport(ArrayTransport):
    """Sites that say which process did their work: site i's worker is 100 + i."""

    def exchange(self, requests, timeout_s, on_result, stop_when=None):  # type: ignore[no-untyped-def]
        def said(site: str, ex: Exchanged) -> None:
            if isinstance(ex.result, TaskReply):
                ex.result.worker = 100 + SITES.index(site)
            on_result(site, ex)

        super().exchange(requests, timeout_s, said, stop_when)


def test_a_site_round_records_the_worker_that_did_it(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), rounds=1))
    Coordinator(run, _WorkerTransport(OFFSETS, N_TRAIN)).run()
    with RunStore(run) as store:
        srs = store.site_rounds()
    assert {s.site: (s.extra or {}).get("worker") for s in srs} == {
        s: 100 + i for i, s in enumerate(SITES)
    }


def test_rejected_and_failed_sites_are_recorded_and_left_out(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), rounds=1, min_sites=1))

    def nan_for_site2(site: str, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if site != "site2":
            return w
        k = _float_keys(w)[0]
        bad = w[k].copy()
        bad.flat[0] = np.nan
        return {**w, k: bad}

    fail = {"site3": SiteFailure(SiteRoundStatus.FAILED, "FileNotFoundError: /data/site3")}
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN, nan_for_site2, fail)).run()
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    with RunStore(run) as store:
        by_site = {s.site: s for s in store.site_rounds()}
        assert store.rounds()[0]["status"] == "done" and store.rounds()[0]["n_sites"] == 1
    assert by_site["site1"].status == "ok"
    assert by_site["site2"].status == "rejected" and "non-finite" in by_site["site2"].error
    assert by_site["site3"].status == "failed" and "site3" in by_site["site3"].error
    # only site1's update made it in
    w1 = load_model(model_path(run, 1)).weights
    for k in _float_keys(w0):
        np.testing.assert_allclose(w1[k], w0[k] + OFFSETS["site1"], rtol=1e-5, atol=1e-5)
        assert np.isfinite(w1[k]).all()


def test_too_few_sites_fails_the_round(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), min_sites=3))
    fail = {"site2": SiteFailure(SiteRoundStatus.TIMEOUT, "no reply within 240 s")}
    with pytest.raises(FedsegError, match="only 2 site"):
        Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN, fail=fail)).run()
    with RunStore(run) as store:
        assert store.rounds()[0]["status"] == "failed"
        assert store.meta.status() == RunStatus.FAILED
        assert store.last_done_round() == 0


def test_restart_continues_after_last_done_round(tmp_path: Path) -> None:
    # every round model kept, to see that a resume leaves round 1's model as it was
    plan = tiny_plan(_sites(tmp_path), rounds=3, retention={"keep_every": None})
    run = write_run(tmp_path / "run", plan)

    with pytest.raises(RuntimeError):
        Coordinator(run, DyingTransport(2, OFFSETS, N_TRAIN)).run()
    w1 = load_model(model_path(run, 1)).weights
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    assert [next(iter(r.values())).round for r in t.requests] == [2, 3, 4]
    with RunStore(run) as store:
        assert [r["status"] for r in store.rounds()] == ["done"] * 3
        assert store.meta.status() == RunStatus.DONE
    assert weights_hash(load_model(model_path(run, 1)).weights) == weights_hash(w1)


def test_sites_that_never_connect_give_a_clear_error(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), min_sites=3))
    only_one = ArrayTransport({"site1": 0.1}, N_TRAIN)
    with pytest.raises(FedsegError, match=r"only 1 of 3 sites connected .*missing: site2, site3"):
        Coordinator(run, only_one).run()


def test_live_table_shows_sites_states_and_dice(tmp_path: Path) -> None:
    from rich.console import Console

    from fedseg.federation.commands.watch import live_table

    plan = tiny_plan(_sites(tmp_path), rounds=1, min_sites=1)
    run = write_run(tmp_path / "run", plan)
    fail = {"site3": SiteFailure(SiteRoundStatus.FAILED, "boom")}
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN, fail=fail)).run()
    console = Console(record=True, width=120)
    with RunStore(run) as store:
        console.print(live_table(store, plan))
    text = console.export_text()
    assert "round 1/1" in text and "best: model" in text
    lines = {ln.split()[1]: ln for ln in text.splitlines() if ln.strip().startswith(("│ site",))}
    assert "0.600" in lines["site1"] and "done" in lines["site1"]  # Dice 0.5 + offset 0.1
    assert "failed" in lines["site3"]


def test_round_loop_raises_alarm_for_a_site_below_the_federation(tmp_path: Path) -> None:
    # site3 validates at Dice 0.5 - 0.3 = 0.2 every round, the others at 0.6 and 0.62:
    # rounds collapsed per case, its cases against the others' (model 0 is skipped): flagged.
    offsets = {"site1": 0.1, "site2": 0.12, "site3": -0.3}
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), rounds=7))
    Coordinator(run, ArrayTransport(offsets, N_TRAIN)).run()
    with RunStore(run) as store:
        below = {(a.site, a.round) for a in store.alarms() if a.kind == "below_federation"}
    assert below and {site for site, _ in below} == {"site3"}
    assert min(r for _, r in below) <= 7
