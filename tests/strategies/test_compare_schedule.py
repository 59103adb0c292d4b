"""``fedseg compare`` with a recipe's lr schedule: the plans and the centralized model
train with the same schedule (a centralized round being an epoch), and the single-site
models can be left out (``single_sites``, ``--no-single-sites``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from fedseg.federation.commands.compare_plans.arguments import CompareConfig, PlanArg
from fedseg.federation.commands.compare_plans.run import run_compare
from fedseg.model.config import NetworkConfig
from fedseg.plan import StrategyConfig
from fedseg.run_folder import LR_USED, model_path
from fedseg.tracking.store import RunStore
from fedseg.train.config import LrScheduleConfig, TrainConfig
from fedseg.train.lr_schedule import round_lr
from fedseg.train.plateau import PlateauConfig


def _fedavg_and_central(four_sites: dict[str, Path], budget: int, **train: object) -> CompareConfig:
    """FedAvg and the centralized model (no single sites) on two tiny sites, the tiny recipe
    with ``train``'s changes."""
    recipe = TrainConfig.cpu(patch_size=(16, 16, 16), val_roi=(32, 32, 32), val_overlap=0.0,
                             cache_mb=64, **train)  # fmt: skip
    sites = {s: four_sites[s] for s in ("site1", "site2")}
    plan = PlanArg(label="fedavg", strategy=StrategyConfig(name="fedavg"))
    return CompareConfig(plans=[plan], sites=sites, budget=budget, single_sites=False,
                         network=NetworkConfig(base_filters=4, depth=2), train=recipe)  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_plans_and_central_train_at_the_schedule_without_single_sites(
    tmp_path: Path, four_sites: dict[str, Path]
) -> None:
    sched = LrScheduleConfig(kind="cosine", warmup_rounds=1)
    cfg = _fedavg_and_central(four_sites, 3, lr_schedule=sched)
    train = cfg.train
    out = tmp_path / "cmp"
    outcomes = run_compare(cfg, out, Console(quiet=True))
    assert [(o.label, o.kind) for o in outcomes] == [("fedavg", "plan"), ("central", "central")]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["central", "fedavg"]
    expected = [pytest.approx(round_lr(train.lr, sched, r, 3)) for r in (1, 2, 3)]
    for run, per_round in (("fedavg", 2), ("central", 1)):
        with RunStore(out / "runs" / run) as store:
            lrs = [(sr.extra or {}).get(LR_USED) for sr in store.site_rounds()]
        assert lrs == [e for e in expected for _ in range(per_round)], run


@pytest.mark.timeout(300)
def test_until_plateau_stops_the_plans_and_central_and_reports_what_they_trained(
    tmp_path: Path, four_sites: dict[str, Path]
) -> None:
    # no gain can exceed 1: each run stops once one scored round followed its first
    cfg = _fedavg_and_central(four_sites, 6, plateau=PlateauConfig(rounds=1, min_delta=1.0))
    out = tmp_path / "cmp"
    outcomes = run_compare(cfg, out, Console(quiet=True))
    by = {o.label: o for o in outcomes}
    assert by["fedavg"].epochs == 2.0 and by["central"].epochs == 2.0  # of 6
    assert by["fedavg"].final == model_path(out / "runs" / "fedavg", 2)
    assert max(x for x, _ in by["fedavg"].curve) <= 2.0
    for run in ("fedavg", "central"):
        with RunStore(out / "runs" / run) as store:
            assert [r["round"] for r in store.rounds()] == [1, 2], run
    assert "at most, each run stopped once" in (out / "results.md").read_text()
