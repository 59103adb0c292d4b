"""The strategies a plan can name (``strategy.name``), ``make_strategy`` and ``plan_strategy``.

One plain dict, name -> class; adding a strategy is one import and one line here. The
strategy modules import only ``strategies.base`` (and ``parallel``), never this module.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from fedseg.errors import PlanError
from fedseg.federation.rounds.strategies.base import Strategy
from fedseg.federation.rounds.strategies.fedavg import FedAvg, FedProx
from fedseg.federation.rounds.strategies.modality import ModalityFedAvg
from fedseg.federation.rounds.strategies.robust import Krum, Median, TrimmedMean
from fedseg.federation.rounds.strategies.sequential import Cyclic, SinglePass
from fedseg.federation.rounds.strategies.server_opt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedseg.federation.rounds.strategies.site_selection import FastestK, SelectUtility
from fedseg.plan import PlanConfig, StrategyConfig

STRATEGIES: dict[str, type[Strategy[Any]]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "median": Median,
    "trimmed-mean": TrimmedMean,
    "krum": Krum,
    "cyclic": Cyclic,
    "single-pass": SinglePass,
    "modality-fedavg": ModalityFedAvg,
    "fastest-k": FastestK,
    "select-utility": SelectUtility,
}


def make_strategy(
    cfg: StrategyConfig, local_epochs: int, local_steps: int | None = None
) -> Strategy[Any]:
    """The strategy named in the plan, with its parameters checked (a ``PlanError`` names
    the unknown strategy or the bad parameter); its training tasks take ``local_steps``
    optimizer steps when given, else ``local_epochs`` epochs."""
    cls = STRATEGIES.get(cfg.name)
    if cls is None:
        raise PlanError(
            f"strategy {cfg.name!r} is unknown; choose one of {', '.join(sorted(STRATEGIES))}"
        )
    try:
        params = cls.params_model.model_validate(cfg.params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "".join(f".{p}" for p in err["loc"])
        raise PlanError(f"strategy.params{where}: {err['msg']}") from None
    strategy = cls(params, local_epochs)
    strategy.local_steps = local_steps
    return strategy


def plan_strategy(plan: PlanConfig) -> Strategy[Any]:
    """The strategy of ``plan`` with its local work (``local_epochs``, ``local_steps``)."""
    return make_strategy(plan.strategy, plan.local_epochs, plan.local_steps)
