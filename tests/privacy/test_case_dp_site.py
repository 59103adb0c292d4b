"""Case-level DP (``privacy.dp.level: case``) at a site and at the aggregator: the site's
ledger and its budget refusal (real tiny sites, real DP-SGD), and the coordinator recording
what the sites spent (hand-made replies)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedseg.federation.rounds.case_budget import LEDGER_FILE, read_ledger
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged, initial_weights
from fedseg.federation.rounds.disclosure import ErrorCategory
from fedseg.federation.rounds.site import TaskFailed, run_task
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest, recipe_json
from fedseg.model.compute import ComputeConfig
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig
from fedseg.privacy.accounting import epsilon, noise_for_budget
from fedseg.run_folder import ComputeUsed, PrivacySpent
from fedseg.tracking.store import RunStore
from fedseg.train.dp import BATCH_NORM_REFUSED, steps_per_epoch
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run

SIGMA, DELTA = 1.0, 1e-5


def _dp_plan(sites: dict[str, Path], **dp: object) -> PlanConfig:
    return tiny_plan(sites, privacy={"min_summary_cases": 1, "dp": {"level": "case", **dp}})


def _request(
    plan: PlanConfig, rnd: int, epochs: int = 1, validate: bool = True, **more: Any
) -> TaskRequest:
    return TaskRequest(
        rnd, rnd - 1, validate, epochs, rnd, "run-dp", recipe_json(plan.network, plan.train),
        initial_weights(plan), min_summary_cases=1, privacy=plan.privacy,
        planned_rounds=plan.rounds, **more,
    )  # fmt: skip


def test_the_site_refuses_to_train_past_its_budget_and_its_ledger_says_what_it_spent(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """The tiny site has 3 training cases, batch 1: q = 1/3, 3 steps an epoch. A budget
    between ε(3 steps) and ε(6 steps): round 1 trains (its reply says ε after 3 steps, no
    training loss, fp32 though the recipe asks for bf16), round 2 is refused in one line
    before any work and spends nothing; a validation-only task still validates."""
    q = 1 / 3
    eps1 = epsilon(SIGMA, 3, q, DELTA, "rdp")
    eps2 = epsilon(SIGMA, 6, q, DELTA, "rdp")
    budget = (eps1 + eps2) / 2
    plan = _dp_plan(tiny_sites, epsilon=budget, noise_multiplier=SIGMA, delta=DELTA)
    bf16 = plan.train.model_copy(update={"compute": ComputeConfig(precision="bf16")})
    plan = plan.model_copy(update={"train": bf16})
    ws = tmp_path / "ws"
    rep = run_task("site1", tiny_sites["site1"], _request(plan, 1), ws, min_summary_cases=1)
    assert rep.weights is not None and rep.validated
    assert rep.train_loss is None  # computed without noise: not sent under DP-SGD
    assert rep.compute == ComputeUsed(device="cpu", precision="fp32")
    spent = rep.privacy_spent
    assert spent is not None and spent.level == "case" and spent.steps == 3
    assert spent.epsilon == pytest.approx(eps1) and spent.sigma == SIGMA
    assert spent.sample_rate == pytest.approx(q) and spent.delta == DELTA
    ledger = json.loads((ws / LEDGER_FILE).read_text())
    assert ledger["steps"] == 3 and ledger["epsilon"] == pytest.approx(eps1)
    assert ledger["rounds"] == [{"round": 1, "steps": 3, "epsilon": pytest.approx(eps1)}]

    with pytest.raises(TaskFailed) as info:
        run_task("site1", tiny_sites["site1"], _request(plan, 2), workspace=ws)
    assert info.value.category == ErrorCategory.PRIVACY
    line = info.value.line
    assert "\n" not in line and line.startswith("privacy: privacy budget: this round would ")
    want = f"take ε to {np.ceil(eps2 * 100) / 100:g} > {budget:g} at δ=1e-05; this site "
    assert want + "trains no more in this run" in line
    assert read_ledger(ws).steps == 3  # type: ignore[union-attr]  # refused: nothing spent

    val = run_task("site1", tiny_sites["site1"], _request(plan, 3, epochs=0), ws, 1)
    assert val.validated and val.validation and val.privacy_spent is None
    assert read_ledger(ws).steps == 3  # type: ignore[union-attr]


def test_a_null_noise_multiplier_is_the_smallest_that_keeps_the_planned_rounds(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """ε = 8 over the plan's 2 rounds of 1 epoch: sigma is noise_for_budget's for 6 steps; both
    rounds train within the budget, a third (beyond the plan) is refused. FedProx and an
    averaged optimizer state work as without DP (post-processing of the noisy gradients)."""
    plan = _dp_plan(tiny_sites, epsilon=8.0)
    q, steps = 1 / 3, 2 * steps_per_epoch(1 / 3)
    ws = tmp_path / "ws"
    for rnd in (1, 2):
        req = _request(plan, rnd, validate=False, optimizer_mode="average", proximal_mu=0.01)
        rep = run_task("site2", tiny_sites["site2"], req, ws)
        assert rep.privacy_spent is not None and rep.weights is not None
        state = rep.optimizer_state
        assert state is not None and int(state["step"]) == steps_per_epoch(q)
        assert {k.split("/", 1)[1] for k in state if k.startswith("exp_avg/")} == {
            k for k, v in rep.weights.items() if v.dtype.kind == "f"
        }
    ledger = read_ledger(ws)
    assert ledger is not None and ledger.steps == steps
    assert ledger.sigma == pytest.approx(noise_for_budget(8.0, DELTA, steps, q, "rdp"))
    assert ledger.epsilon <= 8.0
    with pytest.raises(TaskFailed, match="privacy budget: this round would take ε to"):
        run_task("site2", tiny_sites["site2"], _request(plan, 3, validate=False), ws)


def test_the_site_refuses_batch_norm_and_changed_settings_in_one_line(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    plan = _dp_plan(tiny_sites, epsilon=50.0, noise_multiplier=SIGMA)
    batch = plan.model_copy(
        update={"network": NetworkConfig(base_filters=4, depth=2, norm="batch")}
    )
    with pytest.raises(TaskFailed) as info:
        run_task("site1", tiny_sites["site1"], _request(batch, 1), workspace=tmp_path / "a")
    assert info.value.category == ErrorCategory.PRIVACY and BATCH_NORM_REFUSED in info.value.line
    ws = tmp_path / "b"
    run_task("site1", tiny_sites["site1"], _request(plan, 1, validate=False), workspace=ws)
    looser = _dp_plan(tiny_sites, epsilon=100.0, noise_multiplier=SIGMA)  # a bigger budget
    with pytest.raises(TaskFailed, match="differ from those this site's budget was fixed with"):
        run_task("site1", tiny_sites["site1"], _request(looser, 2, validate=False), workspace=ws)


class _SpendingTransport(ArrayTransport):
    """Hand-made replies that also say what each site spent: ``spent(site, round)``."""

    def __init__(self, spent: Callable[[str, int], PrivacySpent]) -> None:
        super().__init__({s: 0.1 for s in SITES}, {s: 3 for s in SITES})
        self.spent = spent

    def exchange(self, requests, timeout_s, on_result) -> None:  # type: ignore[no-untyped-def]
        def with_spent(site: str, ex: Exchanged) -> None:
            req = requests[site]
            if isinstance(ex.result, TaskReply) and req.epochs > 0:
                assert req.privacy.dp.level == "case" and req.planned_rounds == 2
                ex.result.privacy_spent = self.spent(site, req.round)
            on_result(site, ex)

        super().exchange(requests, timeout_s, with_spent)


def test_the_coordinator_records_what_each_site_spent_as_the_accountant_computes_it(
    tmp_path: Path,
) -> None:
    """Every site's ε per round reaches the store's privacy ledger; a site whose claimed ε
    is not what its numbers give (site3 claims half) gets a warning, and the recomputed ε
    is recorded."""

    def spent(site: str, rnd: int) -> PrivacySpent:
        steps = 3 * rnd
        eps = epsilon(SIGMA, steps, 1 / 3, DELTA, "rdp")
        claim = eps / 2 if site == "site3" else eps
        return PrivacySpent(level="case", epsilon=claim, delta=DELTA, sigma=SIGMA, clip_norm=1.0,
                            steps=steps, sample_rate=1 / 3, accountant="rdp")  # fmt: skip

    sites = {s: tmp_path / s for s in SITES}
    run = write_run(tmp_path / "run", _dp_plan(sites, noise_multiplier=SIGMA))
    Coordinator(run, _SpendingTransport(spent)).run()
    with RunStore(run) as store:
        rows = store.privacy_ledger()
        log = "\n".join(message for _, _, message in store.events())
    assert [(r, s) for r, s, _ in rows] == [(r, s) for r in (1, 2) for s in SITES]
    for rnd, _, row in rows:
        assert row.epsilon == pytest.approx(epsilon(SIGMA, 3 * rnd, 1 / 3, DELTA, "rdp"))
        assert row.steps == 3 * rnd and row.level == "case"
    assert "site site3 reports ε=" in log and "site site1 reports" not in log
