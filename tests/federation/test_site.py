"""A site's round without processes: real data, real training, private per-case values."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.local_transport import LocalTransport
from fedseg.federation.rounds.coordinator import Coordinator, initial_weights
from fedseg.federation.rounds.disclosure import ErrorCategory
from fedseg.federation.rounds.site import TaskFailed, run_task, site_workspace
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest, recipe_json
from fedseg.model.compute import ComputeConfig, ComputeOverrides
from fedseg.run_folder import LR_USED, ComputeUsed, cross_label
from fedseg.tracking.store import RunStore
from fedseg.train.config import LrScheduleConfig, TrainConfig
from fedseg.train.lr_schedule import round_lr
from fedseg.train.warm import SiteCache, process_cache
from tests.federation.fed_helpers import tiny_plan, write_run


def test_site_validates_trains_and_keeps_cases_private(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    plan = tiny_plan(tiny_sites)
    w0 = initial_weights(plan)
    recipe = recipe_json(plan.network, plan.train)
    ws = tmp_path / "ws"
    req = TaskRequest(1, 0, True, 1, 7, "run-t", recipe, w0, min_summary_cases=1)
    rep = run_task("site1", tiny_sites["site1"], req, workspace=ws, min_summary_cases=1)
    assert rep.n_train == 3 and rep.n_val == 1 and rep.weights is not None
    assert set(rep.weights) == set(w0)
    assert any(not np.array_equal(rep.weights[k], w0[k]) for k in w0)
    assert rep.train_loss is not None and 0 < rep.train_loss < 2
    assert rep.worker == os.getpid()  # the process that did the work
    assert set(rep.validation) == {"ET", "TC", "WT", "mean"}
    assert rep.validation["WT"]["dice"].n == 1
    with RunStore(ws) as local:  # per-case values stay in the site's own store
        rows = local.case_metrics()
        assert {r[0] for r in rows} == {0} and {r[1] for r in rows} == {"site1"}
    assert [p.name for p in ws.glob("optimizer_*.npz")] == ["optimizer_0001.npz"]
    # a redone round 1 starts from the same (empty) Adam state; round 2 from round 1's
    again = run_task("site1", tiny_sites["site1"], req, workspace=ws)
    for k in w0:
        np.testing.assert_array_equal(again.weights[k], rep.weights[k])  # type: ignore[index]
    req2 = TaskRequest(2, 1, False, 1, 8, "run-t", recipe, rep.weights)
    rep2 = run_task("site1", tiny_sites["site1"], req2, workspace=ws)
    assert rep2.validation == {} and rep2.weights is not None
    assert sorted(p.name for p in ws.glob("optimizer_*.npz")) == [
        "optimizer_0001.npz", "optimizer_0002.npz"
    ]  # fmt: skip


def test_site_computes_with_the_recipes_compute_unless_its_machine_overrides_it(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """The plan's ``train.compute`` is the default; the site's overrides (``fedseg site
    start --device/--precision``) win; the reply says what was used. Validation only (the
    device and precision apply to it as to training): seconds."""
    plan = tiny_plan(tiny_sites)
    train = plan.train.model_copy(update={"compute": ComputeConfig(precision="bf16")})
    req = TaskRequest(1, 0, True, 0, 7, "run-c", recipe_json(plan.network, train),
                      initial_weights(plan), min_summary_cases=1)  # fmt: skip

    def task(compute: ComputeOverrides | None) -> ComputeUsed | None:
        rep = run_task("site1", tiny_sites["site1"], req, tmp_path / "ws", 1, compute)
        assert rep.validated and rep.weights is None
        return rep.compute

    assert task(None) == ComputeUsed(device="cpu", precision="bf16")  # the plan's
    assert task(ComputeOverrides()) == ComputeUsed(device="cpu", precision="bf16")
    assert task(ComputeOverrides(precision="fp32")) == ComputeUsed(device="cpu", precision="fp32")
    # auto: the CPU on this machine
    assert task(ComputeOverrides(device="auto")) == ComputeUsed(device="cpu", precision="bf16")
    # a GPU this machine lacks fails the task with a line that names it and the fix
    with pytest.raises(TaskFailed) as info:
        task(ComputeOverrides(device="cuda:3"))
    assert info.value.category == ErrorCategory.INTERNAL
    assert "cuda:3" in info.value.line and "--device cpu" in info.value.line
    assert str(tiny_sites["site1"]) not in info.value.line


def test_a_run_id_may_not_be_the_case_cache_folder(tmp_path: Path) -> None:
    """Run workspaces and the case cache share ``<data>/.fedseg/``."""
    assert site_workspace(tmp_path, "run-1") == tmp_path / ".fedseg" / "run-1"
    with pytest.raises(FedsegError, match="case cache"):
        site_workspace(tmp_path, "cache")


def test_site_keeps_two_optimizer_states_and_redoes_a_round_from_the_right_one(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """keep-local Adam state is pruned like the aggregator's models with ``keep_last: 1``:
    after any number of rounds the workspace holds at most two copies, the newest and the
    one its round started from, also for a site that sat rounds out (cyclic, sampled)."""
    plan = tiny_plan(tiny_sites)
    recipe = recipe_json(plan.network, plan.train)
    ws, data = tmp_path / "ws", tiny_sites["site1"]
    weights = initial_weights(plan)
    replies = {}
    for rnd in (1, 2, 4, 5):  # the site sits round 3 out
        req = TaskRequest(rnd, rnd - 1, False, 1, 7, "run-t", recipe, weights)
        replies[rnd] = run_task("site1", data, req, workspace=ws)
        files = sorted(p.name for p in ws.glob("optimizer_*.npz"))
        assert len(files) <= 2
        if rnd == 4:  # round 4 started from round 2's state: both kept, round 1's gone
            assert files == ["optimizer_0002.npz", "optimizer_0004.npz"]
            # the aggregator restarted: round 4 again, from the same (round 2) state
            again = run_task("site1", data, req, workspace=ws)
            for k in weights:
                np.testing.assert_array_equal(again.weights[k], replies[4].weights[k])  # type: ignore[index]
    assert sorted(p.name for p in ws.glob("optimizer_*.npz")) == [
        "optimizer_0004.npz", "optimizer_0005.npz"
    ]  # fmt: skip


def test_a_warm_site_gives_the_numbers_of_a_cold_one(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """A process's second task on a site reuses its warm data (``train.warm``): the same
    split, prepared cases and validation volumes, so the same weights and metrics as the
    first task, which built them (validation with another site's model, training and the
    home check: every path that reads the site's cases)."""
    plan = tiny_plan(tiny_sites)
    w0 = initial_weights(plan)
    other = {k: v * 0.5 for k, v in w0.items()}
    req = TaskRequest(1, 0, True, 1, 7, "run-w", recipe_json(plan.network, plan.train), w0,
                      min_summary_cases=1, cross={cross_label("site2", 0): other},
                      home=True)  # fmt: skip
    sites = SiteCache()
    cold = run_task("site1", tiny_sites["site1"], req, tmp_path / "ws", 1, sites=sites)
    warm = sites.get(tiny_sites["site1"])
    assert (sites.builds, sites.hits) == (1, 1) and warm.held()[0] > 0  # volumes held
    again = run_task("site1", tiny_sites["site1"], req, tmp_path / "ws", 1, sites=sites)
    assert (sites.builds, sites.hits) == (1, 2) and sites.get(tiny_sites["site1"]) is warm
    assert cold.weights is not None and again.weights is not None
    for k in w0:
        np.testing.assert_array_equal(again.weights[k], cold.weights[k])
    assert again.validation == cold.validation and again.validation
    assert again.cross == cold.cross and again.cross
    assert again.home == cold.home and again.home
    assert again.train_loss == cold.train_loss


def test_a_site_sees_a_case_added_between_two_tasks(tmp_path: Path) -> None:
    """The issue's check at the round level: the process's warm site is rebuilt when a case
    is added to its data folder, and the next task counts it."""
    make_tiny_dataset(tmp_path / "data", sites=2, cases_per_site=4)
    data = {s: tmp_path / "data" / s for s in ("site1", "site2")}
    plan = tiny_plan(data)
    req = TaskRequest(1, 0, True, 0, 7, "run-a", recipe_json(plan.network, plan.train),
                      initial_weights(plan), min_summary_cases=1)  # fmt: skip
    sites = SiteCache()
    before = run_task("site1", data["site1"], req, tmp_path / "ws", 1, sites=sites)
    assert before.n_train + before.n_val == 4
    shutil.move(data["site2"] / "site2_000", data["site1"] / "site2_000")
    after = run_task("site1", data["site1"], req, tmp_path / "ws", 1, sites=sites)
    assert after.n_train + after.n_val == 5 and sites.builds == 2


def test_run_task_keeps_the_site_warm_in_its_process(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """Without a cache of its own, ``run_task`` (a Flower ClientApp, ``compare``'s
    transport) uses the process's: its next task on the site reuses the entry."""
    plan = tiny_plan(tiny_sites)
    req = TaskRequest(1, 0, True, 0, 7, "run-p", recipe_json(plan.network, plan.train),
                      initial_weights(plan), min_summary_cases=1)  # fmt: skip
    run_task("site2", tiny_sites["site2"], req, tmp_path / "ws", 1)
    cache = process_cache()
    warm, hits = cache.get(tiny_sites["site2"]), cache.hits
    run_task("site2", tiny_sites["site2"], req, tmp_path / "ws", 1)
    assert cache.hits == hits + 1 and cache.get(tiny_sites["site2"]) is warm


def test_a_site_s_next_task_starts_from_its_held_optimizer_state(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """keep-local: the state a task saved is held in the process for the site's next task,
    which trains exactly as from the file (a cold process)."""
    plan = tiny_plan(tiny_sites)
    w0 = initial_weights(plan)
    recipe = recipe_json(plan.network, plan.train)
    r1 = TaskRequest(1, 0, False, 1, 7, "run-o", recipe, w0, min_summary_cases=1)
    warm_sites = SiteCache()
    first = run_task("site1", tiny_sites["site1"], r1, tmp_path / "ws", 1, sites=warm_sites)
    r2 = TaskRequest(2, 1, False, 1, 8, "run-o", recipe, first.weights, min_summary_cases=1)
    warm = run_task("site1", tiny_sites["site1"], r2, tmp_path / "ws", 1, sites=warm_sites)
    assert warm_sites.optimizer_hits == 1
    shutil.copytree(tmp_path / "ws", tmp_path / "ws-cold")
    (tmp_path / "ws-cold" / "optimizer_0002.npz").unlink()  # as before round 2
    cold = run_task("site1", tiny_sites["site1"], r2, tmp_path / "ws-cold", 1, sites=SiteCache())
    for k in w0:
        np.testing.assert_array_equal(warm.weights[k], cold.weights[k])  # type: ignore[index]


def test_site_trains_round_r_at_the_plans_schedule(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    """The lr a site trains with in round r is ``round_lr(lr, schedule, r, planned)``: the
    reply says it (read from the optimizer that stepped), and the weights are exactly those
    of a constant-lr recipe at that lr; rounds and planned rounds come from the request."""
    sched = LrScheduleConfig(kind="cosine", warmup_rounds=1)
    plan = tiny_plan(tiny_sites)
    train = plan.train.model_copy(update={"lr_schedule": sched})
    w0 = initial_weights(plan)

    def task(rnd: int, recipe_train: TrainConfig, planned: int = 5) -> TaskReply:
        recipe = recipe_json(plan.network, recipe_train)
        req = TaskRequest(rnd, rnd - 1, False, 1, 11, "run-lr", recipe, w0,
                          optimizer_mode="reset", planned_rounds=planned)  # fmt: skip
        return run_task("site1", tiny_sites["site1"], req, tmp_path / f"ws{rnd}")

    for rnd in (1, 2, 4):
        rep = task(rnd, train)
        assert rep.lr == pytest.approx(round_lr(plan.train.lr, sched, rnd, 5))
    assert task(1, train).lr == pytest.approx(plan.train.lr / 2)  # warmup
    assert task(2, train).lr == pytest.approx(plan.train.lr)  # the cosine's start
    lr3 = round_lr(plan.train.lr, sched, 3, 5)
    scheduled, fixed = task(3, train), task(3, plan.train.model_copy(update={"lr": lr3}))
    assert scheduled.weights is not None and fixed.weights is not None and fixed.lr == lr3
    for k in w0:
        np.testing.assert_array_equal(scheduled.weights[k], fixed.weights[k])
    # the constant schedule is today's: the recipe's lr in every round
    assert task(4, plan.train, planned=0).lr == plan.train.lr
    # a site that validates only trains at no lr
    req = TaskRequest(1, 0, True, 0, 1, "run-lr", recipe_json(plan.network, train), w0,
                      min_summary_cases=1, planned_rounds=5)  # fmt: skip
    assert run_task("site1", tiny_sites["site1"], req, tmp_path / "v", 1).lr is None


def test_the_round_loop_records_each_sites_lr(tmp_path: Path, tiny_sites: dict[str, Path]) -> None:
    """Real sites (``LocalTransport``) under a step schedule: ``site_rounds.extra["lr"]``
    is the formula's lr of the round, for every site that trained."""
    sites = dict(list(tiny_sites.items())[:2])
    plan = tiny_plan(sites, rounds=3)
    sched = LrScheduleConfig(kind="step", step_every=1, step_factor=0.5)
    plan = plan.model_copy(update={"train": plan.train.model_copy(update={"lr_schedule": sched})})
    run = write_run(tmp_path / "run", plan)
    transport = LocalTransport(sites, {s: tmp_path / "ws" / s for s in sites})
    Coordinator(run, transport).run()
    with RunStore(run) as store:
        got = {(r.round, r.site): (r.extra or {}).get(LR_USED) for r in store.site_rounds()}
    assert got == {
        (r, s): pytest.approx(plan.train.lr * 0.5 ** (r - 1)) for r in (1, 2, 3) for s in sites
    }
