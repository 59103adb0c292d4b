"""`fedseg dashboard` as a user runs it (a real process on a free port), its refusals, and
the dashboard child that `simulate`/`server start --dashboard` run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from fedseg.dashboard.child import dashboard_child
from fedseg.dashboard.serve import URL_PREFIX
from tests.dashboard.conftest import SITES
from tests.helpers import fedseg_env, run_fedseg
from tests.tracking.conftest import build_run


@contextmanager
def dashboard(run: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``fedseg dashboard RUN --port 0 ARGS`` running; yields the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedseg", "dashboard", str(run), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=fedseg_env(env),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(URL_PREFIX), (line, proc.stderr.read() if proc.poll() else "")
        yield line[len(URL_PREFIX) :].strip().rstrip("/")
    finally:
        proc.terminate()
        proc.wait(10)


def wait_ok(url: str, **kw: object) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            r = httpx.get(url, timeout=5, **kw)  # type: ignore[arg-type]
            if r.status_code != 503:
                return r
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_dashboard_prints_its_url_and_serves_the_run(seg_run: Path) -> None:
    with dashboard(seg_run) as url:
        assert url.startswith("http://127.0.0.1:")
        r = wait_ok(url + "/api/state")
        assert r.status_code == 200 and [x["site"] for x in r.json()["sites"]] == list(SITES)
        assert httpx.post(url + "/api/state").status_code == 405


def test_token_from_the_environment(seg_run: Path) -> None:
    with dashboard(seg_run, env={"FEDSEG_DASHBOARD_TOKEN": "t0ken"}) as url:
        r = wait_ok(url + "/api/state")
        assert r.status_code == 401 and "site1" not in r.text
        ok = httpx.get(url + "/api/state", headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200


def test_refusals_are_one_line(seg_run: Path, tmp_path: Path) -> None:
    r = run_fedseg("dashboard", seg_run, "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "not loopback" in r.stderr and "--token" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_fedseg("dashboard", empty, "--port", "0", timeout=60)
    assert r.returncode == 2 and "no run store" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_the_dashboard_child_waits_for_the_run_and_ends_with_the_block(tmp_path: Path) -> None:
    """As `simulate --dashboard` runs it: started before the run folder exists, its URL
    printed, serving once the store appears, terminated when the command ends."""
    said: list[str] = []
    run = tmp_path / "run"
    with dashboard_child(run, 0, said.append, poll_s=0.2) as proc:
        assert len(said) == 1 and said[0].startswith(URL_PREFIX + "http://127.0.0.1:")
        url = said[0][len(URL_PREFIX) :].rstrip("/")
        build_run(run, {"a": [0.2, 0.4], "b": [0.3, 0.5]})
        r = wait_ok(url + "/api/state")
        assert r.status_code == 200 and r.json()["round"] == 1
    assert proc.poll() is not None


def test_the_dashboard_child_does_not_outlive_a_killed_command(seg_run: Path) -> None:
    """The command killed with SIGKILL cannot terminate its child: the child ends itself."""
    code = (
        "import sys, time\n"
        "from fedseg.dashboard.child import dashboard_child\n"
        "with dashboard_child(sys.argv[1], 0, lambda s: print(s, flush=True)):\n"
        "    time.sleep(600)\n"
    )
    cmd = [sys.executable, "-c", code, str(seg_run)]
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=fedseg_env())
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.startswith(URL_PREFIX), line
        url = line[len(URL_PREFIX) :].strip().rstrip("/")
        assert wait_ok(url + "/api/state").status_code == 200
    finally:
        parent.kill()
        parent.wait(10)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url + "/api/state", timeout=2)
        except httpx.TransportError:
            break  # gone
        assert time.monotonic() < deadline, "the dashboard child outlived its command"
        time.sleep(0.3)


def test_simulate_and_server_start_have_the_option() -> None:
    for verb in (("simulate",), ("server", "start")):
        r = run_fedseg(*verb, "--help", timeout=120)
        assert r.returncode == 0 and "--dashboard" in r.stdout and "--dashboard-port" in r.stdout
