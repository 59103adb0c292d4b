"""Plan combinations the privacy mechanisms cannot run with: each refused before the run
starts with its one line (``privacy_refusals`` via ``check_plan_runs``); the commented
example plan documents the privacy keys and loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fedseg.errors import FedsegError
from fedseg.federation.commands.run_folder import check_plan_runs
from fedseg.plan import PlanConfig, example_plan, load_plan
from fedseg.privacy.accounting import epsilon
from tests.federation.fed_helpers import tiny_plan

STREAMING = "fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad, fastest-k or select-utility"
SECAGG = {"secure_aggregation": True}
HE = {"he": "ckks"}
SITE_DP = {"dp": {"level": "site"}}
CASE_DP = {"dp": {"level": "case"}}


def _plan(n_sites: int = 3, privacy: dict | None = None, **over: Any) -> PlanConfig:
    sites = {f"s{i}": Path(f"/data/s{i}") for i in range(n_sites)}
    return tiny_plan(sites, privacy={"min_summary_cases": 1, **(privacy or {})}, **over)


def _strategy(name: str, **params: Any) -> dict:
    return {"strategy": {"name": name, "params": params}}


REFUSED = [
    (_plan(privacy=SECAGG, **_strategy("median")),
     "strategy median needs every site's update; privacy.secure_aggregation lets the "
     f"aggregator see only their sum: choose {STREAMING}"),
    (_plan(privacy=HE, **_strategy("krum")),
     "strategy krum needs every site's update; privacy.he lets the aggregator see only "
     f"their sum: choose {STREAMING}"),
    (_plan(privacy=SITE_DP, **_strategy("cyclic")),
     "strategy cyclic needs every site's update; privacy.dp level site hands the "
     f"aggregation only the noisy mean of the clipped updates: choose {STREAMING}"),
    (_plan(privacy=SECAGG, alarms={"update_outlier": True}),
     "alarms.update_outlier needs each site's update; privacy.secure_aggregation lets the "
     "aggregator see only their sum: set it to null or false"),
    (_plan(privacy=HE, **_strategy("fedavg", optimizer_state="average")),
     "strategy.params.optimizer_state average: the sites' optimizer states would travel "
     "and be averaged in clear, outside privacy.he: choose reset or keep-local"),
    (_plan(privacy=SITE_DP, bounds={"update_norm_ratio": 2.0}),
     "bounds.update_norm_ratio 2 cannot apply with privacy.dp level site: the aggregator "
     "must not use single norms (they would change the DP sensitivity); set it to null "
     "(privacy.dp.clip_norm bounds every update)"),
    (_plan(privacy=SECAGG, bounds={"reject_norm_ratio": 50.0}),
     "bounds.reject_norm_ratio 50 cannot apply with privacy.secure_aggregation: the "
     "aggregator cannot see single norms; set it to null (privacy.secagg.clip_norm bounds "
     "every update)"),
    (_plan(2, privacy=SECAGG, min_sites=2),
     "secure aggregation needs at least 3 sites training per round, this plan has 2 (with "
     "2, each learns the other's update from the sum): add sites or raise "
     "sites_per_round/fraction"),
    (_plan(5, privacy=SECAGG, **_strategy("fedavg", sites_per_round=2)),
     "secure aggregation needs at least 3 sites training per round, this plan has 2 (with "
     "2, each learns the other's update from the sum): add sites or raise "
     "sites_per_round/fraction"),
    (_plan(privacy={**SECAGG, "secagg": {"threshold": 4}}),
     "privacy.secagg.threshold 4 exceeds the 3 sites training per round: lower it (null: "
     "ceil(2n/3))"),
    (_plan(10, privacy=SECAGG, straggler={"quorum": 0.5}),
     "straggler.quorum 0.5 may cut a round to 5 of its 10 training sites, fewer than the 7 "
     "secure aggregation needs to unmask the sum: raise the quorum to at least 0.70 or "
     "lower privacy.secagg.threshold"),
    (_plan(straggler={"quorum": 0.5}, **_strategy("cyclic")),
     "straggler.quorum: strategy cyclic trains one site per round, there is no quorum to "
     "reach; remove the straggler key (round_timeout_s bounds a slow site)"),
    (_plan(privacy=CASE_DP, network={"base_filters": 4, "depth": 2, "norm": "batch"}),
     "privacy.dp level case: DP-SGD cannot keep batch statistics private: use network.norm "
     "instance or group"),
    (_plan(privacy=CASE_DP, train={**_plan().train.model_dump(), "patches_per_case": 2}),
     "privacy.dp level case: train.patches_per_case 2 would make one case several records: "
     "set it to 1"),
    (_plan(privacy={"dp": {"level": "site", "noise_multiplier": 1.1, "epsilon": 8.0}},
           rounds=10),
     f"privacy.dp: 10 rounds at noise 1.1 take ε to {epsilon(1.1, 10):.3g} > 8 at "
     "δ=1e-05: lower rounds, raise noise_multiplier or epsilon, or leave noise_multiplier "
     "null (the smallest that keeps the budget)"),
]  # fmt: skip


@pytest.mark.parametrize(("plan", "line"), REFUSED, ids=range(len(REFUSED)))
def test_refused_combinations_say_why_in_one_line(
    tmp_path: Path, plan: PlanConfig, line: str
) -> None:
    with pytest.raises(FedsegError) as exc:
        check_plan_runs(plan, tmp_path / "run")
    assert str(exc.value) == line


@pytest.mark.parametrize(
    "plan",
    [
        _plan(privacy=SECAGG, **_strategy("fedadam")),
        _plan(privacy=SITE_DP, **_strategy("fedprox", mu=0.1)),
        _plan(privacy=SITE_DP, bounds={"update_norm_ratio": None, "reject_norm_ratio": None}),
        _plan(privacy={"dp": {"level": "site", "noise_multiplier": 5.0}}, rounds=2),
        _plan(privacy=CASE_DP, **_strategy("median")),  # case-level DP keeps single updates
        _plan(privacy=SECAGG, alarms={"update_outlier": False}),
        _plan(10, privacy=SECAGG, straggler={"quorum": 0.7}),  # 7 of 10 keep t = 7
    ],
)
def test_sensible_combinations_pass(tmp_path: Path, plan: PlanConfig) -> None:
    check_plan_runs(plan, tmp_path / "run")


def test_secure_aggregation_and_he_together_are_refused_by_the_plan() -> None:
    with pytest.raises(ValueError, match="choose one of privacy"):
        _plan(privacy={**SECAGG, **HE})


@pytest.mark.usefixtures("without_dp_accounting")
def test_missing_extra_is_refused_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(FedsegError) as exc:
        check_plan_runs(_plan(privacy=CASE_DP), tmp_path / "run")
    assert str(exc.value) == "privacy.dp needs the privacy extra: pip install 'fedseg[privacy]'"


def test_example_plan_documents_privacy_and_loads(tmp_path: Path) -> None:
    text = example_plan()
    for key in ("secure_aggregation:", "secagg:", "dp:", "level: none", "epsilon:", "delta:",
                "noise_multiplier:", "accountant:", "he:", "scheme: none"):  # fmt: skip
        assert key in text
    raw = yaml.safe_load(text)
    assert set(raw["privacy"]) == {"min_summary_cases", "secure_aggregation", "secagg", "dp",
                                   "he"}  # fmt: skip
    # every documented key is a real one: each sub-section validates with extra="forbid"
    (tmp_path / "plan.yaml").write_text(text)
    plan = load_plan(tmp_path / "plan.yaml")
    assert plan.privacy.dp.level == "none" and not plan.privacy.hides_updates
    assert set(raw["privacy"]["dp"]) == set(type(plan.privacy.dp).model_fields)
    assert set(raw["privacy"]["secagg"]) <= set(type(plan.privacy.secagg).model_fields)
    assert set(raw["privacy"]["he"]) == set(type(plan.privacy.he).model_fields)
