"""The epoch budget of ``fedseg compare``: every run spends ``budget`` local epochs per site."""

from __future__ import annotations

import math
from pathlib import Path

from fedseg.errors import FedsegError
from fedseg.federation.commands.compare_plans.arguments import CompareConfig, PlanArg
from fedseg.federation.rounds.participation import n_participants
from fedseg.federation.rounds.strategies.parallel import ParallelParams
from fedseg.federation.rounds.strategies.registry import make_strategy
from fedseg.federation.rounds.strategies.sequential import Cyclic, SinglePass
from fedseg.plan import BoundsConfig, PlanConfig, PrivacyConfig, SiteConfig, StrategyConfig


def plan_for(cfg: CompareConfig, arg: PlanArg, sites: dict[str, Path]) -> PlanConfig:
    """The plan of one compared run: its strategy on the compared sites with the shared
    recipe and seed, its rounds (or cycles / epochs per visit) set by the budget. Summaries
    over any number of cases: a comparison runs on data its operator holds (and evaluates
    every model on every case anyway), however few validation cases a site has."""
    n = len(sites)
    strat = make_strategy(arg.strategy, arg.local_epochs)
    params = dict(arg.strategy.params)
    rounds = 1
    if isinstance(strat, SinglePass):
        params["epochs_per_visit"] = cfg.budget
    elif isinstance(strat, Cyclic):
        per_visit = params.get("epochs_per_visit") or arg.local_epochs
        if cfg.budget % per_visit:
            raise FedsegError(
                f"plan {arg.label}: a budget of {cfg.budget} epochs is not a whole number of "
                f"cycles of {per_visit} epochs per visit; change --budget or epochs_per_visit"
            )
        params["cycles"] = cfg.budget // per_visit
    else:
        p = strat.params
        k = (n_participants(n, p.fraction, p.sites_per_round)
             if isinstance(p, ParallelParams) else n)  # fmt: skip
        rounds = math.ceil(cfg.budget * n / (arg.local_epochs * k))
    return PlanConfig(
        name=arg.label, sites={s: SiteConfig(data=p) for s, p in sites.items()}, rounds=rounds,
        local_epochs=arg.local_epochs, network=cfg.network, train=cfg.train, min_sites=1,
        seed=cfg.seed, strategy=StrategyConfig(name=arg.strategy.name, params=params),
        privacy=PrivacyConfig(min_summary_cases=1),
        bounds=BoundsConfig(enabled=cfg.bounds),
    )  # fmt: skip


def epochs_axis(plan: PlanConfig) -> list[float]:
    """Local epochs per site (averaged over the sites) spent before each model 0..R,
    replayed from the strategy's tasks."""
    strat = make_strategy(plan.strategy, plan.local_epochs)
    rounds = strat.planned_rounds(plan.rounds, len(plan.sites))
    xs, total = [0.0], 0.0
    for rnd in range(1, rounds + 1):
        tasks = strat.configure_round(rnd, plan.site_names)
        total += sum(t.epochs for t in tasks.values()) / len(plan.sites)
        xs.append(total)
    return xs
