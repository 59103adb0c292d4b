"""Plan ``local_steps``: every site trains a fixed number of optimizer steps per round,
whatever its size: the plan's checks, the wire, the tasks, a real site, simulated time and
compare's budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.arguments import CompareConfig, PlanArg
from fedseg.federation.commands.compare_plans.budget import epoch_steps, epochs_axis, plan_for
from fedseg.federation.engine.messages import decode_request, encode_request
from fedseg.federation.rounds.coordinator import Coordinator, initial_weights
from fedseg.federation.rounds.sim_time import SiteSpeed, site_round_time
from fedseg.federation.rounds.site import run_task
from fedseg.federation.rounds.strategies.registry import plan_strategy
from fedseg.federation.rounds.tasks import TaskRequest, recipe_json
from fedseg.plan import StrategyConfig, load_plan
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("local_steps: 0\n", "local_steps: Input should be greater than or equal to 1"),
        ("local_steps: 5\nprivacy: {dp: {level: case}}\n", r"DP-SGD .* whole epochs"),
        ("local_steps: 5\ntask: synthesis\n", "synthesis.steps_per_round"),
    ],
)
def test_plans_that_cannot_train_steps_are_one_line_errors(
    tmp_path: Path, extra: str, message: str
) -> None:
    p = tmp_path / "plan.yaml"
    p.write_text("sites: {a: {data: x}}\n" + extra)
    with pytest.raises(FedsegError, match=message) as info:
        load_plan(p)
    assert "\n" not in str(info.value)


def test_steps_travel_in_the_request() -> None:
    req = TaskRequest(1, 0, True, 1, 5, "r", "{}", {"a": np.zeros(2, np.float32)}, steps=40)
    assert decode_request(encode_request(req)).steps == 40
    plain = TaskRequest(1, 0, True, 1, 5, "r", "{}", {"a": np.zeros(2, np.float32)})
    assert decode_request(encode_request(plain)).steps == 0


@pytest.mark.parametrize("strategy", ["fedavg", "cyclic"])
def test_every_training_task_carries_the_plans_steps(tmp_path: Path, strategy: str) -> None:
    sites = {s: tmp_path / s for s in SITES}
    plan = tiny_plan(sites, local_steps=7, strategy=StrategyConfig(name=strategy), min_sites=1)
    t = ArrayTransport(dict.fromkeys(SITES, 0.1), dict.fromkeys(SITES, 2))
    Coordinator(write_run(tmp_path / "run", plan), t).run()
    trained = [r for reqs in t.requests for r in reqs.values() if r.epochs > 0]
    assert trained and all(r.steps == 7 for r in trained)
    assert all(r.steps == 0 for reqs in t.requests for r in reqs.values() if r.epochs == 0)
    without = tiny_plan(sites)
    assert plan_strategy(without).training_task(1).steps == 0


def test_a_site_trains_exactly_the_steps_it_is_asked(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """site1 has 3 training cases (2 patches each, batch 2: 3 steps an epoch); asked for
    5 steps it takes 5, which its Adam state counts; asked for none, one epoch (3)."""
    plan = tiny_plan(tiny_sites)
    recipe = recipe_json(plan.network, plan.train)
    w0 = initial_weights(plan)

    def steps_taken(steps: int) -> int:
        req = TaskRequest(1, 0, False, 1, 7, "run-s", recipe, w0, optimizer_mode="average",
                          steps=steps)  # fmt: skip
        rep = run_task("site1", tiny_sites["site1"], req, workspace=tmp_path / "ws")
        assert rep.weights is not None and rep.optimizer_state is not None
        return int(rep.optimizer_state["step"])

    assert steps_taken(5) == 5
    assert steps_taken(0) == 3


def test_simulated_time_counts_steps_instead_of_epochs() -> None:
    speed = SiteSpeed(download_s=10, upload_s=20, train_s_per_case=3, val_s_per_case=1)
    epochs = site_round_time(speed, n_train=50, n_val=4, epochs=2)
    assert epochs == 10 + 4 + 50 * 2 * 3 + 4 + 20
    steps = site_round_time(speed, n_train=50, n_val=4, epochs=2, steps=7)
    assert steps == 10 + 4 + 7 * 3 + 4 + 20
    assert site_round_time(speed, 50, 4, 0, steps=7) == 10 + 4  # validation only


def test_compare_budgets_steps_as_epochs_worth_of_the_sites_steps(
    tiny_sites: dict[str, Path],
) -> None:
    """The tiny sites' epochs take 3 steps each (3 cases x 2 patches / batch 2): a budget
    of 4 epochs is 4 x 9 = 36 steps; fedavg at 5 steps a site and 3 sites a round needs
    ceil(36 / 15) = 3 rounds, cyclic at 5 a visit ceil(36 / 15) = 3 cycles; the axis
    counts 15 / 9 epochs' worth a fedavg round. Single-pass cannot count steps."""
    cfg = CompareConfig(plans=[], sites=tiny_sites, budget=4, train=tiny_plan(tiny_sites).train)
    assert epoch_steps(tiny_sites, cfg.train) == dict.fromkeys(tiny_sites, 3)
    fedavg = plan_for(cfg, PlanArg(label="f", strategy=StrategyConfig(name="fedavg"),
                                   local_steps=5), tiny_sites)  # fmt: skip
    assert fedavg.rounds == 3 and fedavg.local_steps == 5
    assert epochs_axis(fedavg) == pytest.approx([0, 15 / 9, 30 / 9, 45 / 9])
    cyclic = plan_for(cfg, PlanArg(label="c", strategy=StrategyConfig(name="cyclic"),
                                   local_steps=5), tiny_sites)  # fmt: skip
    assert cyclic.strategy.params["cycles"] == 3
    assert epochs_axis(cyclic)[-1] == pytest.approx(9 * 5 / 9)
    # whole epochs: unchanged (4 rounds of 1 epoch, one epoch a round on the axis)
    plain = plan_for(cfg, PlanArg(label="p", strategy=StrategyConfig(name="fedavg")), tiny_sites)
    assert plain.rounds == 4 and epochs_axis(plain) == [0, 1, 2, 3, 4]
    with pytest.raises(FedsegError, match=r"single-pass .* local_steps"):
        plan_for(cfg, PlanArg(label="s", strategy=StrategyConfig(name="single-pass"),
                              local_steps=5), tiny_sites)  # fmt: skip
