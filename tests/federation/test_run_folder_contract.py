"""The run folder's contract (``fedseg.run_folder``) pinned against its writers and readers:
the status enums are exactly what the SQLite store accepts, the coordinator writes exactly
the documented files and only ``MetaKey`` keys, and ``status``/``report``/``alarms`` read
the recorded plan typed (a cyclic plan's planned rounds are cycles x sites)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from fedseg.errors import FedsegError
from fedseg.federation.commands.leave_one_out import run_without
from fedseg.federation.commands.run_folder import prepare_run
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.plan import load_plan, plan_without, read_run_plan, save_plan
from fedseg.run_folder import (
    BEST_MODEL,
    PLAN_FILE,
    RECIPE_FILE,
    STORE_FILE,
    BestModel,
    LastTrained,
    LivePhase,
    LiveState,
    MetaKey,
    RoundStatus,
    RunStatus,
    SiteActivity,
    SiteRoundStatus,
    loso_run,
    model_path,
    strategy_state_path,
)
from fedseg.tracking.alarms import run_alarm_config
from fedseg.tracking.report import build_report
from fedseg.tracking.status import RunState, read_status
from fedseg.tracking.store import RunStore, SiteRound
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


def _sites(tmp_path: Path) -> dict[str, Path]:
    return {s: tmp_path / s for s in SITES}  # the array transport never reads them


def _files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


def test_status_enums_are_what_the_store_accepts(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run") as store:
        for i, status in enumerate(RoundStatus, start=1):
            store.start_round(i)
            store.finish_round(i, status=status)
        assert [r["status"] for r in store.rounds()] == list(RoundStatus)
        for i, status in enumerate(SiteRoundStatus, start=1):
            store.record_site_round(SiteRound(i, "s", status))
        assert [sr.status for sr in store.site_rounds()] == list(SiteRoundStatus)
        db = store._db
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE rounds SET status = 'skipped' WHERE round = 1")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE site_rounds SET status = 'skipped' WHERE round = 1")


def test_the_status_reader_accepts_every_run_status(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunStore(run) as store:
        store.start_round(1)
        store.finish_round(1)
    seen = {}
    for status in RunStatus:
        with RunStore(run) as store:
            store.meta.set_status(status, "boom" if status == RunStatus.FAILED else None)
        seen[status] = read_status(run).state
    assert seen[RunStatus.FAILED] == RunState.FAILED
    assert seen[RunStatus.RUNNING] == RunState.RUNNING
    assert seen[RunStatus.DONE] == RunState.DONE
    with RunStore(run) as store:
        store.set_meta(MetaKey.STATUS, "paused")  # a value no fedseg writes
    with pytest.raises(FedsegError, match="meta 'status' is 'paused'"):
        read_status(run)


def test_typed_meta_values_round_trip(tmp_path: Path) -> None:
    best = BestModel(model_round=3, score=0.71, n_val=12, time=time.time())
    live = LiveState(round=2, phase=LivePhase.TRAINING, sites={"a": SiteActivity.TRAINING})
    with RunStore(tmp_path / "run") as store:
        assert store.meta.best() is None and store.meta.live() is None
        store.meta.set_best(best)
        store.meta.set_live(live)
        store.meta.set_last_trained(LastTrained(round=2, sites=["a"]))
        assert store.meta.best() == best and store.meta.live() == live
        assert store.get_meta(MetaKey.BEST)["score"] == 0.71  # plain JSON in the table
        assert store.meta.last_trained() == LastTrained(round=2, sites=["a"])
        store.set_meta(MetaKey.BEST, {"model_round": "x"})
        with pytest.raises(FedsegError, match="meta 'best' is not readable"):
            store.meta.best()
        with pytest.raises(ValueError):
            store.set_meta("no_such_key", 1)  # type: ignore[arg-type]


def test_the_coordinator_writes_exactly_the_documented_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run(save_plan(tmp_path / "plan.yaml", tiny_plan(_sites(tmp_path))), run,
                enrolled=list(SITES))  # fmt: skip
    assert _files(run) == {PLAN_FILE, STORE_FILE}
    with RunStore(run) as store:
        assert store.meta.status() == RunStatus.CREATED and store.meta.run_id()
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    models = {model_path(run, r).relative_to(run).as_posix() for r in (0, 1, 2)}
    assert models == {"models/round_0000.pt", "models/round_0001.pt", "models/round_0002.pt"}
    # the default retention keeps round 0 (the best here, and every 25th) and the last one
    assert _files(run) == {PLAN_FILE, STORE_FILE, BEST_MODEL, *models} - {"models/round_0001.pt"}
    with RunStore(run) as store:
        keys = {k for (k,) in store._db.execute("SELECT key FROM meta")}
        assert keys <= {k.value for k in MetaKey}
        assert store.meta.status() == RunStatus.DONE and store.meta.final_validated()
        assert store.meta.planned_rounds() == 2
        best = store.meta.best()
        live = store.meta.live()
    assert best is not None and best.model_round == 0
    assert live is not None and live.phase == LivePhase.FINAL_VALIDATION
    assert set(live.sites.values()) == {SiteActivity.DONE}


def test_a_stateful_strategy_saves_its_state_beside_each_round_model(tmp_path: Path) -> None:
    params = {"cycles": 1, "optimizer_state": "average"}
    plan = tiny_plan(_sites(tmp_path), min_sites=1, strategy={"name": "cyclic", "params": params},
                     retention={"keep_every": None})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    states = {strategy_state_path(model_path(run, r)).relative_to(run).as_posix()
              for r in (1, 2, 3)}  # fmt: skip
    assert states == {f"models/round_000{r}.strategy.npz" for r in (1, 2, 3)}
    assert states <= _files(run)


def test_status_and_report_read_the_recorded_plan_typed(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), rounds=4,
                                                alarms={"min_gap": 0.3}))  # fmt: skip
    RunStore(run).close()
    plan = read_run_plan(run)
    assert plan is not None and plan.alarms.min_gap == 0.3
    assert run_alarm_config(run).min_gap == 0.3
    st = read_status(run)
    assert st.state == RunState.NOT_STARTED and st.rounds_planned == 4  # the plan's, not run
    assert [s.site for s in st.sites] == list(SITES)
    assert "<section id='plan'>" in build_report(run)
    (run / PLAN_FILE).write_text((run / PLAN_FILE).read_text().replace("rounds: 4", "rounds: 0"))
    with pytest.raises(FedsegError, match=r"plan\.yaml: rounds"):
        read_status(run)


def test_a_centralized_run_folder_has_no_plan(tmp_path: Path) -> None:
    run = tmp_path / "central"
    run.mkdir()
    with RunStore(run) as store:
        store.meta.set_centralized(["a"], ["/data/a"], {"a": {"train": [], "val": []}})
        store.meta.set_epochs(3)
    (run / RECIPE_FILE).write_text("{}\n")
    assert read_run_plan(run) is None
    assert run_alarm_config(run).min_gap == 0.05  # the defaults
    st = read_status(run)
    assert st.rounds_planned is None and st.state == RunState.NOT_STARTED


def test_a_cyclic_plan_reports_cycles_times_sites_planned_rounds(tmp_path: Path) -> None:
    plan = tiny_plan(_sites(tmp_path), rounds=1, min_sites=1,
                     strategy={"name": "cyclic", "params": {"cycles": 2}})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    with RunStore(run) as store:
        assert store.meta.planned_rounds() == 2 * len(SITES)
    st = read_status(run)
    assert st.state == RunState.DONE
    assert st.rounds_planned == 6 and st.rounds_done == 6
    # a run stopped halfway is "stopped" against the strategy's count, not the plan's 1
    with RunStore(run) as store:
        store.discard_after(3)
    assert read_status(run).state == RunState.STOPPED


def test_plan_without_a_site(tmp_path: Path) -> None:
    plan = tiny_plan(_sites(tmp_path), min_sites=3)
    reduced = plan_without(plan, "site2")
    assert reduced.site_names == ["site1", "site3"]
    assert reduced.min_sites == 2 and reduced.name == "test-without-site2"
    assert plan.site_names == list(SITES)  # the original is left as it was
    with pytest.raises(FedsegError, match="no site 'nope'"):
        plan_without(plan, "nope")
    with pytest.raises(FedsegError, match="only one site"):
        plan_without(plan_without(reduced, "site1"), "site3")


def test_leave_one_out_reuses_a_finished_run_and_refuses_an_unfinished_one(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path)))
    base = tmp_path / "loso"
    done = loso_run(base, "site1")
    done.mkdir(parents=True)
    loso_run(base, "site2").mkdir()
    with RunStore(done) as store:
        store.meta.set_status(RunStatus.DONE)
    assert run_without(run, "site1", base) == done
    with RunStore(loso_run(base, "site2")) as store:
        store.meta.set_status(RunStatus.RUNNING)
    with pytest.raises(FedsegError, match="unfinished run"):
        run_without(run, "site2", base)
    assert load_plan(run / PLAN_FILE).site_names == list(SITES)
