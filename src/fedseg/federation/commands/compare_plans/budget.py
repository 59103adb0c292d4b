"""The epoch budget of ``fedseg compare``: every run spends ``budget`` local epochs per site.

A plan with ``local_steps`` trains a fixed number of steps per round whatever a site's
size, so its budget is counted in steps: ``budget`` epochs' worth of the sites' steps
(``budget`` x the steps of one epoch at every training site), the centralized model's
compute for ``budget`` epochs. Its axis counts the same unit. For a plan of whole epochs
where every site trains every round both counts agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from fedseg.data.splits import load_split
from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.arguments import CompareConfig, PlanArg
from fedseg.federation.rounds.participation import n_participants
from fedseg.federation.rounds.strategies.parallel import ParallelParams
from fedseg.federation.rounds.strategies.registry import make_strategy, plan_strategy
from fedseg.federation.rounds.strategies.sequential import Cyclic, SinglePass
from fedseg.plan import BoundsConfig, PlanConfig, PrivacyConfig, SiteConfig, StrategyConfig
from fedseg.train.config import TrainConfig


def epoch_steps(sites: Mapping[str, Path], train: TrainConfig) -> dict[str, int]:
    """Optimizer steps of one local epoch at each site: its training cases x
    ``patches_per_case``, in batches of ``batch_size`` (the last one may be short)."""
    per = train.patches_per_case
    return {
        s: math.ceil(len(load_split(p).train) * per / train.batch_size)
        for s, p in sites.items()
    }  # fmt: skip


def plan_for(cfg: CompareConfig, arg: PlanArg, sites: dict[str, Path]) -> PlanConfig:
    """The plan of one compared run: its strategy on the compared sites with the shared
    recipe and seed, its rounds (or cycles / epochs per visit) set by the budget. Summaries
    over any number of cases: a comparison runs on data its operator holds (and evaluates
    every model on every case anyway), however few validation cases a site has."""
    n = len(sites)
    strat = make_strategy(arg.strategy, arg.local_epochs, arg.local_steps)
    params = dict(arg.strategy.params)
    rounds = 1
    steps = arg.local_steps
    # with local_steps: the budget in steps, budget epochs at every site (module doc)
    budget_steps = cfg.budget * sum(epoch_steps(sites, cfg.train).values()) if steps else 0
    if isinstance(strat, SinglePass):
        if steps:
            raise FedsegError(
                f"plan {arg.label}: single-pass visits each site once for the whole budget; "
                "leave local_steps out of its plan file"
            )
        params["epochs_per_visit"] = cfg.budget
    elif isinstance(strat, Cyclic):
        if steps:
            params["cycles"] = max(1, math.ceil(budget_steps / (steps * n)))
        else:
            per_visit = params.get("epochs_per_visit") or arg.local_epochs
            if cfg.budget % per_visit:
                raise FedsegError(
                    f"plan {arg.label}: a budget of {cfg.budget} epochs is not a whole number "
                    f"of cycles of {per_visit} epochs per visit; change --budget or "
                    "epochs_per_visit"
                )
            params["cycles"] = cfg.budget // per_visit
    else:
        p = strat.params
        k = (n_participants(n, p.fraction, p.sites_per_round)
             if isinstance(p, ParallelParams) else n)  # fmt: skip
        if steps:
            rounds = max(1, math.ceil(budget_steps / (steps * k)))
        else:
            rounds = math.ceil(cfg.budget * n / (arg.local_epochs * k))
    return PlanConfig(
        name=arg.label, sites={s: SiteConfig(data=p) for s, p in sites.items()}, rounds=rounds,
        local_epochs=arg.local_epochs, local_steps=steps, network=cfg.network, train=cfg.train,
        min_sites=1, seed=cfg.seed, strategy=StrategyConfig(name=arg.strategy.name, params=params),
        privacy=PrivacyConfig(min_summary_cases=1),
        bounds=BoundsConfig(enabled=cfg.bounds),
    )  # fmt: skip


def epochs_axis(plan: PlanConfig) -> list[float]:
    """Local epochs per site (averaged over the sites) spent before each model 0..R,
    replayed from the strategy's tasks; with ``local_steps``, the steps spent in epochs'
    worth of the sites' steps (module doc)."""
    strat = plan_strategy(plan)
    rounds = strat.planned_rounds(plan.rounds, len(plan.sites))
    per_epoch = 0
    if plan.local_steps:
        data = {s: c.data for s, c in plan.sites.items() if c.data is not None}
        per_epoch = max(1, sum(epoch_steps(data, plan.train).values()))
    xs, total = [0.0], 0.0
    for rnd in range(1, rounds + 1):
        tasks = strat.configure_round(rnd, plan.site_names)
        if per_epoch:
            total += sum(t.steps for t in tasks.values() if t.train) / per_epoch
        else:
            total += sum(t.epochs for t in tasks.values()) / len(plan.sites)
        xs.append(total)
    return xs
