"""`fedseg simulate --dashboard`: a real federation (Flower processes) with its dashboard
child: the URL printed, the run served while it goes, the child gone when it ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fedseg.dashboard.serve import URL_PREFIX
from fedseg.plan import save_plan
from tests.federation.fed_helpers import tiny_plan
from tests.helpers import fedseg_env


@pytest.mark.slow
def test_simulate_serves_its_dashboard_while_it_runs(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    plan = save_plan(tmp_path / "plan.yaml", tiny_plan(tiny_sites, rounds=1))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedseg", "simulate", str(plan), "--out", str(run),
           "--no-live", "--dashboard", "--dashboard-port", "0"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=fedseg_env()
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(URL_PREFIX + "http://127.0.0.1:"), line
        url = line[len(URL_PREFIX) :].strip().rstrip("/")
        state = httpx.get(url + "/api/state", timeout=300)  # served once the store exists
        assert state.status_code == 200
        assert {s["site"] for s in state.json()["sites"]} == set(tiny_sites)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "best model" in out
    with pytest.raises(httpx.TransportError):  # the child ended with the command
        httpx.get(url + "/api/state", timeout=5)
