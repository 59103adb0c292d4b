"""A plan trained across "machines" on loopback: `fedseg server start` + 3 enrolled sites.

The aggregator runs through the CLI exactly as a coordinator types it; the sites are real
SuperNodes with TLS and their enrolled keys, each reading its own synthetic data folder.
One site is killed (SIGKILL of its whole process group, as a crashed machine) in the middle
of round 1: the run must still finish its 2 rounds with the two others.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands import deploy
from fedseg.federation.engine.launcher import flower_env
from fedseg.federation.engine.processes import Proc
from fedseg.model.compute import ComputeOverrides
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, save_plan
from fedseg.run_folder import ENROLLED_NODES_FILE, ComputeUsed, RunStatus
from fedseg.tracking.store import RunStore
from fedseg.train.config import TrainConfig
from tests.deploy.deploy_helpers import make_coordinator
from tests.helpers import free_port

pytestmark = pytest.mark.slow
SITES = ("site1", "site2", "site3")


def _tiny_plan(path: Path) -> Path:
    """2 rounds of a 4-filter, depth-2 network on 16^3 patches; no data paths (deployment)."""
    plan = PlanConfig.model_validate(
        {
            "name": "deploy-test",
            "sites": {s: {} for s in SITES},
            "rounds": 2,
            "min_sites": 2,
            "round_timeout_s": 240,
            "connect_timeout_s": 120,
            "privacy": {"min_summary_cases": 1},  # 1 validation case a site (and its floor)
            "network": NetworkConfig(base_filters=4, depth=2),
            "train": TrainConfig.cpu(
                patch_size=(16, 16, 16), val_roi=(32, 32, 32), val_overlap=0.0, val_batch_size=4
            ),
        }
    )
    return save_plan(path, plan)


def _wait_for(what: str, check: object, timeout: float, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert server.poll() is None, f"the server exited while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.5)


def test_plan_trains_two_rounds_and_survives_a_killed_site(tmp_path: Path) -> None:
    make_tiny_dataset(tmp_path / "data", sites=3, cases_per_site=4, seed=0)
    creds = make_coordinator(tmp_path / "coord", SITES)
    plan = _tiny_plan(tmp_path / "plan.yaml")
    run = tmp_path / "run"
    fleet_port = free_port()
    log = tmp_path / "server.out"
    start = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "fedseg", "server", "start", str(plan),
             "--creds", str(creds), "--out", str(run), "--no-live",
             "--fleet-port", str(fleet_port), "--control-port", str(free_port())],
            env=flower_env(tmp_path / "cli-home"), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    sites: dict[str, Proc] = {}
    try:
        nodes_file = run / ENROLLED_NODES_FILE
        _wait_for(
            "enrollment",
            lambda: nodes_file.exists() and len(json.loads(nodes_file.read_text())) == 3,
            120,
            server,
        )
        for name in SITES:
            sites[name] = deploy.start_site(
                deploy.SiteOptions(
                    server=f"127.0.0.1:{fleet_port}",
                    data_dir=tmp_path / "data" / name,
                    creds=creds / "sites" / name,
                    work_dir=tmp_path / f"work-{name}",
                    runtime_port=free_port(),
                    # the tiny sites validate on 1 case each: let them send their summaries
                    # so a best model is chosen (the floor itself: test_disclosure.py)
                    min_summary_cases=1,
                    # site1's machine chooses bf16 (`fedseg site start --precision bf16`);
                    # the others keep the plan's fp32
                    compute=ComputeOverrides(precision="bf16" if name == "site1" else None),
                )
            )
        # The ClientApp makes the site's private workspace when its first task starts.
        workspace = tmp_path / "data" / "site3" / ".fedseg"
        _wait_for("task at site3", lambda: workspace.is_dir() and any(workspace.iterdir()),
                  240, server)  # fmt: skip
        os.killpg(sites["site3"].pid, signal.SIGKILL)  # site3's machine dies mid-round
        code = server.wait(timeout=420)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        for proc in sites.values():
            proc.stop()
    took = time.monotonic() - start
    assert code == 0, log.read_text()[-3000:]
    with RunStore(run) as store:
        assert store.meta.status() == RunStatus.DONE
        assert store.last_done_round() == 2
        status = {(r.site, r.round): r.status for r in store.site_rounds()}
        compute = {(r.site, r.round): r.compute for r in store.site_rounds()}
        # the engine run's records, as `fedseg simulate` writes them (test_processes.py)
        flower_run = store.get_meta("flower_run_id")
        submitted = [m for _, _, m in store.events() if "submitted" in m]
    assert isinstance(flower_run, int)
    assert submitted == [f"Flower run {flower_run} submitted (deployment)"]
    for site in ("site1", "site2"):
        assert status[(site, 1)] == "ok" and status[(site, 2)] == "ok", status
    assert status[("site3", 1)] in ("failed", "timeout"), status
    # each site's own choice reached its ClientApp; the run records what each one used
    for rnd in (1, 2):
        assert compute[("site1", rnd)] == ComputeUsed(device="cpu", precision="bf16")
        assert compute[("site2", rnd)] == ComputeUsed(device="cpu", precision="fp32")
    assert "best model" in log.read_text()
    # the aggregator never saw a data path: the sites' folders stay theirs
    assert str(tmp_path / "data") not in (run / "plan.yaml").read_text()
    print(f"deployment: 2 rounds, 3 sites (one killed in round 1): {took:.0f} s")
