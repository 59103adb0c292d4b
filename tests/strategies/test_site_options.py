"""A site's real training honours the plan's options: optimizer treatment and FedProx mu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.data.splits import load_split
from fedseg.federation.rounds.coordinator import initial_weights
from fedseg.federation.rounds.site import run_task
from fedseg.federation.rounds.tasks import TaskRequest, recipe_json
from fedseg.train.local import train_local
from tests.strategies.strategy_helpers import tiny_plan


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _req(plan, weights, rnd=1, optimizer="keep-local"):  # type: ignore[no-untyped-def]
    recipe = recipe_json(plan.network, plan.train)
    return TaskRequest(rnd, rnd - 1, False, 1, 7, "r", recipe, weights, optimizer_mode=optimizer)


def test_optimizer_modes_on_the_site(tmp_path: Path, four_sites: dict[str, Path]) -> None:
    plan = tiny_plan({"site1": four_sites["site1"]})
    w0 = initial_weights(plan)
    data = four_sites["site1"]
    keep = run_task("site1", data, _req(plan, w0, optimizer="keep-local"), tmp_path / "keep")
    assert list((tmp_path / "keep").glob("optimizer_*.npz")) and keep.optimizer_state is None
    reset = run_task("site1", data, _req(plan, w0, optimizer="reset"), tmp_path / "reset")
    assert not list((tmp_path / "reset").glob("optimizer*")) and reset.optimizer_state is None
    # the same start, seed and data: reset and a first keep-local round train identically
    for k in w0:
        np.testing.assert_array_equal(keep.weights[k], reset.weights[k])  # type: ignore[index]
    avg = run_task("site1", data, _req(plan, w0, optimizer="average"), tmp_path / "avg")
    assert avg.optimizer_state is not None and int(avg.optimizer_state["step"]) == 3
    assert not list((tmp_path / "avg").glob("optimizer*"))
    # a second keep-local round starts from the kept moments: it differs from a fresh start
    again = run_task("site1", data, _req(plan, w0, 2, optimizer="keep-local"), tmp_path / "keep")
    fresh = run_task("site1", data, _req(plan, w0, 2, optimizer="reset"), tmp_path / "reset")
    k = next(k for k, v in w0.items() if v.dtype.kind == "f" and v.size > 8)
    assert not np.array_equal(again.weights[k], fresh.weights[k])  # type: ignore[index]


def test_proximal_term_keeps_weights_near_the_global_model(four_sites: dict[str, Path]) -> None:
    plan = tiny_plan({"site1": four_sites["site1"]})
    w0 = initial_weights(plan)
    cases = load_split(four_sites["site1"]).train

    def drift(mu: float) -> float:
        res = train_local(plan.network, plan.train, w0, None, cases, 2, seed=1, proximal_mu=mu)
        return float(np.sqrt(sum(((res.weights[k] - w0[k]) ** 2).sum()
                                 for k in w0 if w0[k].dtype.kind == "f")))  # fmt: skip

    free, pulled = drift(0.0), drift(1000.0)
    assert pulled < 0.7 * free
