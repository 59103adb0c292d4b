"""End to end through real Flower processes (one SuperLink, one SuperNode per site).

Each test starts the engine on loopback; each site's tasks run in its warm worker (one
process per site, ``engine.task_worker``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import MODALITIES
from fedseg.data.splits import load_split
from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.engine_run import LocalSites, run_federation
from fedseg.federation.commands.run_folder import prepare_run
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.engine.app_guard import REFUSED
from fedseg.federation.rounds.coordinator import initial_weights
from fedseg.federation.rounds.site import SITE_LOG
from fedseg.model.model_file import load_model
from fedseg.plan import load_plan, save_plan
from fedseg.run_folder import (
    BEST_MODEL,
    FLWR_HOME,
    LOGS_DIR,
    PLAN_FILE,
    STORE_FILE,
    CauseKind,
    ComputeUsed,
    DeclaredCases,
    MetaKey,
    RunStatus,
    model_path,
    probe_lock,
)
from fedseg.tracking.status import RunState, read_status
from fedseg.tracking.store import RunStore
from fedseg.train.case_cache import SITE_FOLDER
from tests.federation.fed_helpers import SITES, run_folder_text, tiny_plan
from tests.helpers import fedseg_env, run_fedseg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _plan_file(tmp_path: Path, sites: dict[str, Path], **overrides: object) -> Path:
    return save_plan(tmp_path / "plan.yaml", tiny_plan(sites, **overrides))


def _wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_simulate_three_sites_two_rounds(tmp_path: Path, tiny_sites: dict[str, Path]) -> None:
    """Through the CLI, as a user types it, with this machine's ``--precision bf16`` (the
    plan says fp32): every site trains with it and the run records it per site and round."""
    run = tmp_path / "run"
    plan = _plan_file(tmp_path, tiny_sites)
    assert load_plan(plan).train.compute.precision == "fp32"
    res = run_fedseg("simulate", plan, "--out", run, "--no-live", "--precision", "bf16",
                     timeout=800)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rounds" in res.stdout and "best model" in res.stdout
    assert (run / BEST_MODEL).is_file()
    status = run_fedseg("status", run)
    assert status.returncode == 0, status.stderr
    for site in SITES:  # status shows each site's device and precision
        row = next(ln for ln in status.stdout.splitlines() if ln.startswith(f"│ {site} "))
        assert "│ cpu " in row and "│ bf16 " in row, row
    with RunStore(run) as store:
        assert store.last_done_round() == 2
        used = ComputeUsed(device="cpu", precision="bf16")
        assert [s.compute for s in store.site_rounds()] == [used] * 2 * len(SITES)
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        assert store.meta.status() == RunStatus.DONE
        # the engine run's records, as `fedseg server start` writes them (tests/deploy)
        flower_run = store.get_meta(MetaKey.FLOWER_RUN_ID)
        assert isinstance(flower_run, int)
        assert [m for _, _, m in store.events() if "submitted" in m] == [
            f"Flower run {flower_run} submitted"
        ]
        srs = store.site_rounds()
        assert {(s.round, s.site) for s in srs} == {(r, s) for r in (1, 2) for s in SITES}
        # each site's warm worker did its rounds: one process per site, loaded once
        workers = {(s.site, (s.extra or {})["worker"]) for s in srs}
        assert len(workers) == len(SITES) == len({w for _, w in workers})
        model_bytes = sum(v.nbytes for v in load_model(model_path(run, 0)).weights.values())
        for s in srs:
            assert s.status == "ok", s
            assert s.n_train == 3 and s.n_val == 1  # 4 cases per site, 4:1 split
            # the model travels each way, plus a little framing and metrics; in round 2 the
            # two other sites' local models of round 1 too (cross-site validation)
            sent = 1 if s.round == 1 else 3
            assert sent * model_bytes <= s.bytes_sent < sent * model_bytes * 1.1
            assert model_bytes <= s.bytes_received < model_bytes * 1.1
            assert s.train_loss is not None and np.isfinite(s.train_loss)
        # cross-site evidence through the engine: each site's home check in rounds 1 and 2,
        # each local model at the two other sites in the next round (round 3: the final
        # validation), summaries only
        cross = store.cross(metric="dice_diff", region="mean")
        home = {(r.round, r.model_site, r.model_round, r.reference_round) for r in cross if r.home}
        assert home == {(r, s, r, r - 1) for r in (1, 2) for s in SITES}
        away = {(r.round, r.model_site, r.eval_site, r.reference_round)
                for r in cross if not r.home}  # fmt: skip
        assert away == {(m + 1, a, b, m) for m in (1, 2) for a in SITES for b in SITES if a != b}
        assert all(r.summary.n == 1 and -1 <= r.summary.mean <= 1 for r in cross)
        assert not (run / "crossval").exists()
        dice = store.validation(metric="dice", region="WT")
        assert {(v.model_round, v.site) for v in dice} == {(m, s) for m in (0, 1, 2) for s in SITES}
        assert all(v.n == 1 for v in dice)
        assert store.case_metrics() == []  # per-case values never reach the aggregator
        # the default retention keeps round 0 (every 25th), the last and the best
        best = store.meta.best()
        assert best is not None and set(store.checkpoints()) == {0, 2, best.model_round}
        assert model_path(run, 1).is_file() == (best.model_round == 1)
        # each site's hello declared its split through Flower; it bounds its reports
        # (and the modalities it has: all four, no fedseg_site.yaml)
        full = DeclaredCases(n_train=3, n_val=1, modalities=list(MODALITIES))
        assert store.meta.declared() == dict.fromkeys(SITES, full)
        run_id = store.meta.run_id()
    w0 = initial_weights(load_plan(run / PLAN_FILE))
    w2 = load_model(model_path(run, 2)).weights
    assert any(not np.array_equal(w0[k], w2[k]) for k in w0)
    # the sites ran it under their app guard, which took it for their own fedseg app
    site_logs = sorted((run / LOGS_DIR).glob("site-*.log"))
    assert len(site_logs) == len(SITES)
    assert all(REFUSED not in log.read_text() for log in site_logs)
    # each site kept its per-case values in its own folder
    for site, folder in tiny_sites.items():
        local = folder / ".fedseg" / run_id / "run.sqlite"
        assert local.is_file(), site
        with RunStore(local) as ls:
            assert {r[0] for r in ls.case_metrics()} == {0, 1, 2}
            assert f"{site}@1" in {r[1] for r in ls.case_metrics()}  # its home check


def test_resume_after_kill_9_of_the_aggregator(tmp_path: Path, tiny_sites: dict[str, Path]) -> None:
    plan = _plan_file(tmp_path, tiny_sites)
    run = tmp_path / "run"
    env = fedseg_env()
    cmd = [sys.executable, "-m", "fedseg", "simulate", str(plan), "--out", str(run), "--no-live"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:

        def in_round_2() -> bool:
            if not (run / STORE_FILE).is_file():
                return False
            with RunStore(run) as s:
                return any(r["round"] == 2 for r in s.rounds())

        _wait_for(in_round_2, 600, "round 2 to start")
        with RunStore(run) as store:
            pid = store.meta.aggregator_pid()
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out
    assert "fedseg resume" in out
    with RunStore(run) as store:
        assert store.last_done_round() == 1
        # it never got to say anything: the launcher recorded the crash and its cause
        assert store.meta.status() == RunStatus.CRASHED
        cause = store.meta.cause()
        assert cause is not None and cause.kind == CauseKind.AGGREGATOR_DIED
        assert f"pid {pid}" in cause.message
    st = read_status(run)
    assert st.state == RunState.CRASHED and st.cause == cause and st.running_round == 2
    assert (run / "crossval" / "round_0001").is_dir()  # round 1's models, for round 2
    shown = run_fedseg("status", run)
    assert shown.returncode == 0 and "crashed" in shown.stdout and "aggregator died" in shown.stdout
    res = subprocess.run(
        [sys.executable, "-m", "fedseg", "resume", str(run), "--no-live"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    with RunStore(run) as store:
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        assert store.meta.status() == RunStatus.DONE and store.meta.final_validated()
        assert {(s.round, s.site) for s in store.site_rounds()} == {
            (r, s) for r in (1, 2) for s in SITES
        }
        assert any("resuming after round 1" in m for _, _, m in store.events())
        # the redone round 2 validated round 1's parked local models; none is left
        away = {(r.round, r.model_round) for r in store.cross() if not r.home}
        assert away == {(2, 1), (3, 2)}
    assert model_path(run, 2).is_file() and not (run / "crossval").exists()


def test_a_crashing_site_is_skipped_and_rejoins(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    # site3's data folder is gone in round 1 (its process raises), back for round 2
    sites = dict(tiny_sites)
    copy = tmp_path / "site3"
    shutil.copytree(tiny_sites["site3"], copy, ignore=shutil.ignore_patterns(".fedseg"))
    hidden = tmp_path / "site3.hidden"
    copy.rename(hidden)
    sites["site3"] = copy
    plan = _plan_file(tmp_path, sites, min_sites=2)
    run = tmp_path / "run"

    copy.mkdir()  # exists (prepare_run checks), but holds no cases
    prepare_run(plan, run)

    def restore_after_round_1() -> None:
        end = time.monotonic() + 600
        while time.monotonic() < end:
            with RunStore(run) as s:
                if s.last_done_round() >= 1:
                    break
            time.sleep(0.5)
        shutil.rmtree(copy)  # holds only the site's own workspace log of round 1
        hidden.rename(copy)

    t = threading.Thread(target=restore_after_round_1, daemon=True)
    t.start()
    run_federation(run, LocalSites(), live=False)
    t.join(timeout=5)
    with RunStore(run) as store:
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        by = {(s.round, s.site): s for s in store.site_rounds()}
        assert by[(1, "site3")].status == "failed"
        # the coordinator gets the category and a fixed line; the site's console the cause
        assert by[(1, "site3")].error == (
            "data: the site's data could not be read (FedsegError); the site's log has the details"
        )
        assert "no cases found in" in (run / LOGS_DIR / "site-site3.log").read_text()
        assert store.rounds()[0]["n_sites"] == 2
        assert by[(2, "site3")].status == "ok" and by[(2, "site3")].n_train == 3
        assert store.meta.status() == RunStatus.DONE


def test_a_broken_case_and_a_one_case_site_reveal_nothing_through_the_engine(
    tmp_path: Path,
) -> None:
    """Real processes: site2's truncated label file fails its round; the aggregator gets a
    category and a fixed line through Flower, and nothing of any case: every file of the
    run folder (store dumped) is free of case ids, except the simulated sites' own consoles
    (``logs/site-*.log``, which a deployed site keeps on its machine)."""
    make_tiny_dataset(tmp_path / "data", sites=2, cases_per_site=4, seed=2)
    sites = {s: (tmp_path / "data" / s).resolve() for s in ("site1", "site2")}
    split = {s: load_split(p) for s, p in sites.items()}
    broken = split["site2"].train[0]
    assert broken.label is not None
    broken.label.write_bytes(broken.label.read_bytes()[: broken.label.stat().st_size // 2])
    run = tmp_path / "run"
    plan = _plan_file(tmp_path, sites, rounds=1, min_sites=1, privacy={})  # floor 3
    res = simulate(plan, run, live=False)
    assert res.rounds_done == 1
    with RunStore(run) as store:
        rows = {r.site: r for r in store.site_rounds()}
        assert rows["site1"].status == "ok" and rows["site2"].status == "failed"
        assert rows["site2"].error == (
            "data: the site's data could not be read (DataError); the site's log has the details"
        )
        assert store.validation() == [] and store.case_metrics() == []  # 1 case each
        run_id = store.meta.run_id()
    consoles = {run / LOGS_DIR / f"site-{s}.log" for s in sites}
    case_ids = {c.case_id for sp in split.values() for c in (*sp.train, *sp.val)}
    files = {p: text for p, text in run_folder_text(run).items() if p not in consoles}
    assert run / STORE_FILE in files
    assert [(p.name, c) for p, text in files.items() for c in case_ids if c in text] == []
    assert not any("Traceback" in text or "end-of-stream" in text for text in files.values())
    # the site itself has the full error: its workspace log and its console
    site_log = (sites["site2"] / SITE_FOLDER / str(run_id) / SITE_LOG).read_text()
    assert str(broken.label) in site_log and "Traceback" in site_log
    assert broken.case_id in (run / LOGS_DIR / "site-site2.log").read_text()


def _simulate(plan: Path, run: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "fedseg", "simulate", str(plan), "--out", str(run), "--no-live"]
    return subprocess.Popen(cmd, env=fedseg_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _aggregator_up(run: Path) -> bool:
    if not (run / STORE_FILE).is_file():
        return False
    with RunStore(run) as s:
        return s.meta.aggregator_pid() is not None and any(r["round"] == 1 for r in s.rounds())


def _engine_pids(run: Path) -> list[int]:
    """Processes of the run's engine: their environment names its Flower home (as the
    launcher's reaper and ``kill_leftovers`` find them)."""
    marker = f"FLWR_HOME={(run / FLWR_HOME).resolve()}".encode() + b"\0"
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_a_second_resume_on_a_live_run_is_refused(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    plan = _plan_file(tmp_path, tiny_sites, rounds=1)
    run = tmp_path / "run"
    proc = _simulate(plan, run)
    try:
        _wait_for(lambda: _aggregator_up(run), 600, "round 1 to start")
        assert probe_lock(run).held
        res = run_fedseg("resume", run, "--no-live", timeout=120)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and "is live" in lines[0], res.stderr
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out  # the live run was not disturbed
    st = read_status(run)
    assert st.state == RunState.DONE and st.rounds_done == 1
    assert not probe_lock(run).held


def test_killing_the_launcher_takes_its_engine_along(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    plan = _plan_file(tmp_path, tiny_sites)
    run = tmp_path / "run"
    proc = _simulate(plan, run)
    try:
        _wait_for(lambda: _aggregator_up(run), 600, "the aggregator to run round 1")
        with RunStore(run) as store:
            aggregator = store.meta.aggregator_pid()
        engine = _engine_pids(run)
        assert aggregator in engine and len(engine) >= 5  # SuperLink, 3 SuperNodes, ServerApp
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_for(lambda: not _engine_pids(run), 10, "the engine processes to die")
    finally:
        if proc.poll() is None:
            proc.kill()
    st = read_status(run)
    assert st.state == RunState.CRASHED and st.cause is not None
    assert st.cause.kind == CauseKind.WRITER_GONE and f"pid {proc.pid}" in st.cause.message


def test_a_site_whose_split_grew_is_bounded_by_its_hello(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    # Real Flower processes: each site's hello declares its split (3 training, 1
    # validation case); after round 1, site3's folder gains three cases, so in round 2 it
    # reports more than it declared: its reply is rejected, the round goes on without it.
    from fedseg.data.cases import discover_cases, load_case, write_case

    sites = dict(tiny_sites)
    copy = tmp_path / "site3"
    shutil.copytree(tiny_sites["site3"], copy, ignore=shutil.ignore_patterns(".fedseg"))
    sites["site3"] = copy
    plan = _plan_file(tmp_path, sites, min_sites=2)
    run = tmp_path / "run"
    prepare_run(plan, run)
    staged = [  # written beside the folder, moved in at once
        write_case(tmp_path / "staging", f"added{i}", v.image, v.label, v.affine)
        for i, v in enumerate(load_case(c) for c in discover_cases(tiny_sites["site1"])[:3])
    ]

    def grow_after_round_1() -> None:
        end = time.monotonic() + 600
        while time.monotonic() < end:
            with RunStore(run) as s:
                if s.last_done_round() >= 1:
                    break
            time.sleep(0.2)
        for folder in staged:
            folder.rename(copy / folder.name)

    t = threading.Thread(target=grow_after_round_1, daemon=True)
    t.start()
    run_federation(run, LocalSites(), live=False)
    t.join(timeout=5)
    with RunStore(run) as store:
        assert store.meta.declared()["site3"] == DeclaredCases(
            n_train=3, n_val=1, modalities=list(MODALITIES)
        )
        by = {(s.round, s.site): s for s in store.site_rounds()}
        assert by[(1, "site3")].status == "ok"
        assert by[(2, "site3")].status == "rejected"
        assert "more than the" in (by[(2, "site3")].error or "")
        assert "it declared when it joined" in (by[(2, "site3")].error or "")
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        assert store.rounds()[1]["n_sites"] == 2
        assert store.meta.status() == RunStatus.DONE
