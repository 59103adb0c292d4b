"""The site's warm task worker (``engine.task_worker``) with a real child process that
speaks its protocol: a token line in, a report line out when that task is done."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fedseg.federation.engine.app_guard import site_command
from fedseg.federation.engine.task_worker import TaskWorker

#: a stand-in worker: for each token, wait until the file ``<dir>/<token>.go`` exists,
#: print noise to stdout (as a task might), append the token and its pid to ``<dir>/log``,
#: then report; the token ``die`` exits at once
FAKE = """
import os, sys, time
d = sys.argv[1]
report = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)
for line in sys.stdin:
    token = line.strip()
    if token == "die":
        sys.exit(3)
    while not os.path.exists(os.path.join(d, token + ".go")):
        time.sleep(0.02)
    print("a task's own output")
    with open(os.path.join(d, "log"), "a") as fh:
        fh.write(f"{token} {os.getpid()}\\n")
    report.write(b"0\\n")
"""


def _wait(cond, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def _log(d: Path) -> list[tuple[str, int]]:
    f = d / "log"
    lines = f.read_text().split() if f.exists() else []
    return [(lines[i], int(lines[i + 1])) for i in range(0, len(lines), 2)]


def test_one_process_runs_the_tasks_in_turn_and_is_replaced_when_it_dies(
    tmp_path: Path,
) -> None:
    w = TaskWorker([sys.executable, "-c", FAKE, str(tmp_path)])
    try:
        assert not w.busy() and w.started == 0
        assert w.take("t1")  # started on the first task
        assert w.busy() and not w.take("t2")  # busy: the caller runs t2 elsewhere
        (tmp_path / "t1.go").touch()
        _wait(lambda: not w.busy(), "t1's report")
        (tmp_path / "t3.go").touch()
        assert w.take("t3")
        _wait(lambda: not w.busy(), "t3's report")
        (first, pid1), (third, pid3) = _log(tmp_path)
        assert (first, third) == ("t1", "t3") and pid1 == pid3  # the same warm process
        assert w.started == 1
        # a worker that dies owes nothing; the next task starts a new one
        assert w.take("die")
        _wait(lambda: not w.busy(), "the dead worker to be noticed")
        (tmp_path / "t4.go").touch()
        assert w.take("t4")
        _wait(lambda: not w.busy(), "t4's report")
        assert w.started == 2 and _log(tmp_path)[-1][1] != pid1
    finally:
        w.close()
    assert w.proc is None


def test_the_guard_runs_a_warm_worker_unless_told_not_to() -> None:
    warm = site_command(["flower-supernode"], 9099)
    assert "--fresh-process-per-task" not in warm
    fresh = site_command(["flower-supernode"], 9099, fresh_process_per_task=True)
    assert "--fresh-process-per-task" in fresh[: fresh.index("--")]
