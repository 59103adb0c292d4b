"""The README's demo (three clean sites, one of them another scanner) raises no alarm.

The demo's own data and plan (``make_demo_data``, ``demo_plan``: six rounds) run over the
real round loop and site code in this process (``LocalTransport``, as ``fedseg compare``
runs), so the test costs the training and not the engine's start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.commands.demo import demo_plan, make_demo_data
from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.plan import save_plan
from fedseg.run_folder import PLAN_FILE
from fedseg.tracking.store import RunStore

DEMO_ROUNDS = 6


@pytest.mark.slow
@pytest.mark.timeout(2700)  # 6 demo rounds with cross-site validation: 18 min in CI
def test_demo_federation_raises_no_alarm(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    make_demo_data(data)
    plan = demo_plan(data.resolve(), DEMO_ROUNDS)
    run.mkdir()
    save_plan(run / PLAN_FILE, plan)
    sites = {s: c.data for s, c in plan.sites.items()}
    Coordinator(run, LocalTransport(sites, {s: tmp_path / "ws" / s for s in sites})).run()
    with RunStore(run) as store:
        assert store.last_done_round() == DEMO_ROUNDS
        # the evidence the alarms rest on was gathered: away and home checks of every site
        rows = store.cross()
        assert {r.model_site for r in rows if not r.home} == set(sites)
        assert {r.model_site for r in rows if r.home} == set(sites)
        assert store.alarms() == [], [a.message for a in store.alarms()]
