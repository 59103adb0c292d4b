"""A run's state is true after a crash, and a plan is refused before any process starts.

The run lock (``fedseg.run_folder.RunLock``) is tested with real processes that hold it and
are killed with -9 (the kernel drops the flock, which is what makes ``crashed``
trustworthy); ``status``, ``resume`` and the plan check read it. The engine itself runs in
``test_processes.py`` (kill -9 of the aggregator and of the launcher, a second resume on a
live run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedseg.errors import FedsegError, PlanError
from fedseg.federation.commands import engine_run
from fedseg.federation.commands.engine_run import LocalSites, run_federation
from fedseg.federation.commands.resume import check_resumable
from fedseg.federation.commands.run_folder import (
    ROUND_FILES,
    check_plan_runs,
    network_parameters,
    prepare_run,
    round_bytes,
)
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.model.registry import new_network
from fedseg.plan import StrategyConfig, save_plan
from fedseg.run_folder import (
    HEARTBEAT_S,
    LOCK_FILE,
    STALE_S,
    CauseKind,
    FailureCause,
    RunLock,
    RunLocked,
    RunStatus,
    cause_of,
    folder_problem,
    probe_lock,
)
from fedseg.tracking.status import RunState, read_status, render_status
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run
from tests.helpers import SRC, run_fedseg

FORBIDDEN = Path("/proc/forbidden")  # nothing can be made there, not even by root
OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


def _sites(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for s in SITES:
        (tmp_path / s).mkdir(exist_ok=True)
        out[s] = tmp_path / s
    return out


def _running_run(tmp_path: Path) -> Path:
    """A run folder whose store says round 2 is running (as a writer left it)."""
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path)))
    with RunStore(run) as store:
        store.meta.set_status(RunStatus.RUNNING)
        store.start_round(1)
        store.finish_round(1)
        store.start_round(2)
    return run


def _holder(run: Path) -> subprocess.Popen[str]:
    """A real process that takes the run's lock, says so, and sleeps."""
    code = (
        "import sys, time; from fedseg.run_folder import RunLock; "
        "lock = RunLock.acquire(sys.argv[1], 'fedseg simulate (test)'); "
        "print('locked', flush=True); time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


# -- the lock ---------------------------------------------------------------------------
def test_the_lock_refuses_a_second_writer_and_dies_with_its_holder(tmp_path: Path) -> None:
    run = _running_run(tmp_path)
    assert not probe_lock(run).exists  # a run from before locks: no file, nothing held
    holder = _holder(run)
    try:
        state = probe_lock(run)
        assert state.held and state.holder is not None and state.holder.pid == holder.pid
        with pytest.raises(RunLocked) as err:
            RunLock.acquire(run, wait_s=0.2)
        msg = str(err.value)
        assert "\n" not in msg and f"pid {holder.pid}" in msg and "is live" in msg
    finally:
        _kill(holder)
    state = probe_lock(run)  # the kernel dropped the flock with the process
    assert state.exists and not state.held
    with RunLock.acquire(run) as lock:
        assert probe_lock(run).held and lock.holder.pid == os.getpid()
        before = (run / LOCK_FILE).stat().st_mtime
        os.utime(run / LOCK_FILE, (before - 50, before - 50))
        lock.beat()  # the heartbeat is the lock file's mtime
        assert (run / LOCK_FILE).stat().st_mtime > before - 1
        os.utime(run / LOCK_FILE, (before - 50, before - 50))
        time.sleep(HEARTBEAT_S + 0.5)  # a thread of the holder beats it
        assert (run / LOCK_FILE).stat().st_mtime > before - 1
    assert not probe_lock(run).held


# -- status -----------------------------------------------------------------------------
def test_status_says_crashed_when_the_writer_is_gone(tmp_path: Path) -> None:
    run = _running_run(tmp_path)
    assert read_status(run).state == RunState.RUNNING  # no lock file: taken at its word
    holder = _holder(run)
    try:
        live = read_status(run)
        assert live.state == RunState.RUNNING and live.running_round == 2 and live.cause is None
    finally:
        _kill(holder)
    st = read_status(run)
    assert st.state == RunState.CRASHED and st.cause is not None
    assert st.cause.kind == CauseKind.WRITER_GONE
    assert f"pid {holder.pid}" in st.cause.message and "fedseg resume" in st.cause.message
    text = _render(st)
    assert "crashed" in text and "round 2 unfinished" in text and "writer gone" in text


def test_status_shows_the_recorded_cause_and_a_hung_writer(tmp_path: Path) -> None:
    run = _running_run(tmp_path)
    with RunLock.acquire(run):
        old = time.time() - STALE_S - 10
        os.utime(run / LOCK_FILE, (old, old))
        st = read_status(run)
        assert st.state == RunState.CRASHED and st.cause is not None
        assert st.cause.kind == CauseKind.HUNG
    died = FailureCause.now(CauseKind.AGGREGATOR_DIED, "the aggregator (pid 7) died")
    with RunStore(run) as store:
        store.meta.set_failed(died, RunStatus.CRASHED)
    st = read_status(run)
    assert st.state == RunState.CRASHED and st.cause == died
    with RunStore(run) as store:
        store.meta.set_failed(FailureCause.now(CauseKind.PLAN, "strategy 'x' is unknown"))
    st = read_status(run)
    assert st.state == RunState.FAILED and st.cause is not None
    assert st.cause.kind == CauseKind.PLAN and st.error == "strategy 'x' is unknown"


def test_status_names_a_full_disk_when_nothing_was_recorded(tmp_path: Path) -> None:
    run = _running_run(tmp_path)
    RunLock.acquire(run).release()  # a writer that is gone
    with RunStore(run) as store:
        store.meta.set_round_bytes(1 << 60)  # more than any disk has free
    st = read_status(run)
    assert st.state == RunState.CRASHED and st.cause is not None
    assert st.cause.kind == CauseKind.DISK_FULL and "is full" in st.cause.message


def _render(st: object) -> str:
    from rich.console import Console

    c = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    c.print(render_status(st))  # type: ignore[arg-type]
    return c.export_text()


# -- resume -----------------------------------------------------------------------------
def test_resume_refuses_a_live_run_in_one_line(tmp_path: Path) -> None:
    run = _running_run(tmp_path)
    with RunStore(run) as store:
        store.meta.set_created("run-x")  # a real run folder's store
        store.meta.set_status(RunStatus.RUNNING)
    holder = _holder(run)
    try:
        with pytest.raises(RunLocked, match="is live"):
            check_resumable(run)
        res = run_fedseg("resume", run, "--no-live", timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "is live" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert holder.poll() is None  # the live run was not touched
        with RunStore(run) as store:
            assert not any("resuming" in m for _, _, m in store.events())
    finally:
        _kill(holder)


def test_resume_says_when_it_would_only_repeat_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typo = StrategyConfig(name="fedavg-typo")
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), strategy=typo))
    with RunStore(run) as store:
        store.meta.set_failed(FailureCause.now(CauseKind.PLAN, "strategy 'fedavg-typo' is unknown"))
    _no_engine(monkeypatch)
    with pytest.raises(FedsegError) as err:
        run_federation(run, LocalSites(), live=False)
    msg = str(err.value)
    assert "strategy 'fedavg-typo' is unknown" in msg and "resuming only repeats it" in msg
    assert "\n" not in msg and not (run / LOCK_FILE).exists()


# -- the plan check before any process --------------------------------------------------
def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make starting the engine a test failure: the checks must stop the run before."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the engine was started")

    monkeypatch.setattr(engine_run, "Launcher", refuse)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (StrategyConfig(name="fedavgg"), "strategy 'fedavgg' is unknown; choose one of"),
        (StrategyConfig(name="fedadam", params={"server_lr": -1}), "strategy.params.server_lr"),
    ],
)
def test_a_plan_that_cannot_run_is_refused_before_any_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: StrategyConfig, expected: str
) -> None:
    plan = save_plan(tmp_path / "plan.yaml", tiny_plan(_sites(tmp_path), strategy=strategy))
    _no_engine(monkeypatch)
    with pytest.raises(PlanError, match=expected):
        run_federation(tmp_path / "run", LocalSites(), plan_path=plan, live=False)
    assert not (tmp_path / "run").exists()  # nothing made, nothing started


def test_an_unwritable_run_folder_is_refused_before_any_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = save_plan(tmp_path / "plan.yaml", tiny_plan(_sites(tmp_path)))
    _no_engine(monkeypatch)
    with pytest.raises(FedsegError) as err:
        run_federation(FORBIDDEN / "run", LocalSites(), plan_path=plan, live=False)
    msg = str(err.value)
    assert f"run folder {FORBIDDEN / 'run'} cannot be written" in msg and "\n" not in msg
    res = run_fedseg("simulate", plan, "--out", FORBIDDEN / "run", "--no-live", timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "cannot be written" in lines[0], lines


def test_a_disk_without_room_for_a_round_is_refused(tmp_path: Path) -> None:
    plan = tiny_plan(_sites(tmp_path))
    params = sum(t.numel() for t in new_network(plan.network, None, 0).state_dict().values())
    assert network_parameters(plan.network) == params
    # fedavg streams: its spool holds one update per site while a round is aggregated
    assert round_bytes(plan) == params * 4 * (ROUND_FILES + len(plan.sites))
    median = plan.model_copy(update={"strategy": StrategyConfig(name="median")})
    assert round_bytes(median) == params * 4 * ROUND_FILES  # its updates stay in memory
    average = plan.model_copy(update={"strategy": StrategyConfig(
        name="fedavg", params={"optimizer_state": "average"})})  # fmt: skip
    assert round_bytes(average) == params * 4 * (ROUND_FILES + 3 * len(plan.sites))
    assert check_plan_runs(plan, tmp_path / "run") == round_bytes(plan)
    found = folder_problem(tmp_path / "run", 1 << 60)
    assert found is not None and found.kind == CauseKind.DISK_FULL and found.repeats
    assert "a round writes about" in found.message


def test_a_failure_records_its_cause(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    plan = prepare_run(save_plan(tmp_path / "plan.yaml", tiny_plan(_sites(tmp_path))), run_dir)
    with RunStore(run_dir) as store:
        assert store.meta.round_bytes() == round_bytes(plan)
    torch_says = RuntimeError("PytorchStreamWriter failed writing file data/0")
    assert cause_of(torch_says, run_dir, 1 << 60).kind == CauseKind.DISK_FULL
    assert cause_of(torch_says, FORBIDDEN).kind == CauseKind.UNWRITABLE
    assert cause_of(torch_says, run_dir).kind == CauseKind.ERROR
    assert cause_of(PlanError("bad"), run_dir).kind == CauseKind.PLAN
    assert cause_of(FedsegError("only 1 site"), run_dir).kind == CauseKind.FEDERATION
    assert cause_of(OSError(28, "No space left on device"), run_dir).kind == CauseKind.DISK_FULL


def test_a_full_disk_during_a_round_is_recorded_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = write_run(tmp_path / "run", tiny_plan(_sites(tmp_path), rounds=1))
    with RunStore(run) as store:
        store.meta.set_round_bytes(1 << 60)  # the disk has less free than a round needs

    def save_fails(self: Coordinator, model_round: int, weights: object) -> None:
        if model_round > 0:  # what torch says when the disk is full: no errno in sight
            raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos")

    monkeypatch.setattr(Coordinator, "_save_model", save_fails)
    with pytest.raises(RuntimeError):
        Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    st = read_status(run)
    assert st.state == RunState.FAILED and st.cause is not None
    assert st.cause.kind == CauseKind.DISK_FULL and "is full" in (st.error or "")
    assert "a round writes about" in _render(st)


# -- output paths of the CLI ------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["segment", "case", "-m", "m.pt", "-o", FORBIDDEN / "seg.nii.gz"],
        ["evaluate", "-m", "m.pt", "-d", "data", "-o", FORBIDDEN / "metrics.csv"],
        ["export", "m.pt", "--out", FORBIDDEN / "export"],
        ["select", "RUN", "--singlet", "--out", FORBIDDEN / "selection"],
        ["report", "RUN", "-o", FORBIDDEN / "report.html"],
    ],
)
def test_an_unwritable_output_is_one_line(tmp_path: Path, args: list[object]) -> None:
    args = [tmp_path if a == "RUN" else a for a in args]
    res = run_fedseg(*args, cwd=tmp_path, timeout=120)  # type: ignore[arg-type]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(lines) == 1 and "cannot be written" in lines[0] and str(FORBIDDEN) in lines[0]
