"""Case-level DP end to end through real Flower processes (``fedseg simulate``): three tiny
sites train with DP-SGD; ε per site and round reaches the run store; when the budget runs
out every site refuses in its one line and the run stops with the cause in ``fedseg
status``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.plan import save_plan
from fedseg.privacy.accounting import epsilon
from fedseg.run_folder import RunStatus, SiteRoundStatus
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, tiny_plan
from tests.helpers import run_fedseg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SIGMA, DELTA, Q = 1.0, 1e-5, 1 / 3  # 3 training cases a site, batch 1: 3 steps a round


def test_case_dp_records_epsilon_per_site_and_round_and_stops_at_the_budget(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """Three rounds planned, a budget that holds two: rounds 1 and 2 are done with each
    site's ε in the store (the accountant's for 3 and 6 steps); in round 3 every site
    refuses and the run fails, saying why."""
    eps = {r: epsilon(SIGMA, 3 * r, Q, DELTA, "rdp") for r in (1, 2, 3)}
    budget = (eps[2] + eps[3]) / 2
    dp = {"level": "case", "epsilon": budget, "delta": DELTA, "noise_multiplier": SIGMA}
    plan = save_plan(tmp_path / "plan.yaml", tiny_plan(
        tiny_sites, rounds=3, privacy={"min_summary_cases": 1, "dp": dp}))  # fmt: skip
    run = tmp_path / "run"
    res = run_fedseg("simulate", plan, "--out", run, "--no-live", timeout=850)
    assert res.returncode != 0
    with RunStore(run) as store:
        rows = store.privacy_ledger()
        assert [(r, s) for r, s, _ in rows] == [(r, s) for r in (1, 2) for s in SITES]
        for rnd, _, spent in rows:
            assert spent.level == "case" and spent.steps == 3 * rnd and spent.sigma == SIGMA
            assert spent.epsilon == pytest.approx(eps[rnd], rel=1e-9)
        assert store.last_done_round() == 2
        assert store.meta.status() == RunStatus.FAILED
        third = [s for s in store.site_rounds() if s.round == 3]
        assert sorted(s.site for s in third) == sorted(SITES)
        for s in third:
            assert s.status == SiteRoundStatus.FAILED, s
            assert s.error is not None and "\n" not in s.error
            assert "privacy budget: this round would take ε to" in s.error
            assert "this site trains no more in this run" in s.error
        assert all(s.train_loss is None for s in store.site_rounds())  # not sent under DP
    status = run_fedseg("status", run)
    assert status.returncode == 0, status.stderr
    assert "privacy budget" in status.stdout, status.stdout
    for site, folder in tiny_sites.items():  # each site's own ledger: 6 steps spent
        ledgers = list((folder / ".fedseg").glob(f"{run.name}-*/privacy.json"))
        assert len(ledgers) == 1, site
        assert '"steps": 6' in ledgers[0].read_text()
