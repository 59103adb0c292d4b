"""A sequential plan over real Flower processes (SuperLink, one SuperNode per site)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.federation.commands.simulate import simulate
from fedseg.plan import save_plan
from fedseg.run_folder import LOGS_DIR, LastTrained, RunStatus, SiteRoundStatus
from fedseg.tracking.store import RunStore
from tests.strategies.strategy_helpers import tiny_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_single_pass_over_flower_skips_a_broken_site(
    tmp_path: Path, four_sites: dict[str, Path]
) -> None:
    broken = tmp_path / "broken"  # a site whose data folder holds no cases: its task fails
    broken.mkdir()
    sites = {"site1": four_sites["site1"], "broken": broken}
    params = {"epochs_per_visit": 1, "validate_all": False}  # one message per visit: short
    plan = tiny_plan(sites, strategy={"name": "single-pass", "params": params})
    res = simulate(save_plan(tmp_path / "plan.yaml", plan), tmp_path / "run", live=False)
    assert res.rounds_done == 2
    with RunStore(tmp_path / "run") as store:
        assert store.meta.status() == RunStatus.DONE
        rows = store.site_rounds()
        by = {(sr.round, sr.site): sr for sr in rows if sr.status != SiteRoundStatus.NOT_ASKED}
        # one visit per round, in plan order, each a message to that site alone; the site
        # not visited is recorded as not asked (it got no message)
        assert set(by) == {(1, "site1"), (2, "broken")}
        idle = {(sr.round, sr.site) for sr in rows if sr.status == SiteRoundStatus.NOT_ASKED}
        assert idle == {(1, "broken"), (2, "site1")}
        assert by[(1, "site1")].status == "ok" and by[(1, "site1")].train_loss is not None
        assert by[(2, "broken")].status == "failed"
        assert (by[(2, "broken")].error or "").startswith("data: the site's data could not be read")
        assert "no cases" in (tmp_path / "run" / LOGS_DIR / "site-broken.log").read_text()
        logs = [m for _, _, m in store.events()]
        assert any("round 2: no update from broken; skipped" in m for m in logs)
        assert store.meta.last_trained() == LastTrained(round=1, sites=["site1"])
        # site1 validated the model it received (model 0) and the final model (2 = 1)
        rows = store.validation(metric="dice", region="mean", site="site1")
        assert [r.model_round for r in rows] == [0, 2]
