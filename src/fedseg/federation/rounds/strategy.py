"""Strategies: which sites do what each round, and how their results combine.

A strategy is a small class registered by name (``@register("fedavg")``) with a pydantic
``Params`` model for its plan parameters. It sees only plain values (site names, numpy
weights, case counts): no engine, no store. The round loop (``coordinator``) asks it for
each round's tasks, sends them, checks the updates, and hands it the good ones.
State that must survive a restart (e.g. server-side optimizer moments) goes through
``state_dict``/``load_state_dict`` and is saved with every round's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fedseg.errors import FedsegError
from fedseg.federation.rounds.aggregation import weighted_average
from fedseg.model.weights import Weights
from fedseg.plan import StrategyConfig


@dataclass(frozen=True)
class SiteTask:
    """What one site does in a round, in this order: validate the global model it receives
    (``validate``), then train ``epochs`` epochs on it (``train``; 0 epochs: no training)."""

    validate: bool = True
    epochs: int = 1
    #: options the site's training honours (``proximal_mu``, ``optimizer`` treatment)
    options: Mapping[str, float | int | str | bool] = field(default_factory=dict)
    #: optimizer state to start from (``optimizer: average``), as arrays
    optimizer_state: Weights | None = None

    @property
    def train(self) -> bool:
        return self.epochs > 0


@dataclass(frozen=True)
class SiteUpdate:
    """A site's checked training result: its weights and the cases it trained on."""

    site: str
    weights: Weights
    n_train: int
    train_loss: float
    optimizer_state: Weights | None = None


class Strategy:
    """Base class: every site validates and trains ``local_epochs`` each round."""

    name: ClassVar[str] = ""
    #: sequential plans: a site that fails leaves the model as it was, the loop goes on
    skip_failed_sites: ClassVar[bool] = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, params: BaseModel, local_epochs: int) -> None:
        self.params = params
        self.local_epochs = local_epochs

    def planned_rounds(self, plan_rounds: int, n_sites: int) -> int:
        """How many rounds the federation runs (sequential plans: one round per visit)."""
        return plan_rounds

    def configure_round(self, rnd: int, sites: Sequence[str]) -> dict[str, SiteTask]:
        """Tasks of round ``rnd`` (from 1) for the connected ``sites``."""
        return {s: SiteTask(validate=True, epochs=self.local_epochs) for s in sites}

    def aggregate(
        self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]
    ) -> Weights:
        """The next global model from the round's checked updates (at least one)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint with the global model (empty for stateless strategies)."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``state_dict`` returned (on resume)."""


STRATEGIES: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: make a strategy available to plans as ``strategy.name: <name>``."""

    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


def make_strategy(cfg: StrategyConfig, local_epochs: int) -> Strategy:
    """The strategy named in the plan, with its parameters checked."""
    import fedseg.federation.rounds.strategies  # noqa: F401  (registers the plans beyond FedAvg)

    cls = STRATEGIES.get(cfg.name)
    if cls is None:
        raise FedsegError(
            f"strategy {cfg.name!r} is unknown; choose one of {', '.join(sorted(STRATEGIES))}"
        )
    try:
        params = cls.Params.model_validate(cfg.params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise FedsegError(f"strategy.params.{where}: {err['msg']}") from None
    return cls(params, local_epochs)


@register("fedavg")
class FedAvg(Strategy):
    """FedAvg (McMahan et al. 2017; the FeTS study): the mean of the sites' weights,
    weighted by their training cases (``weighted: false``: plain mean)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        weighted: bool = True

    def aggregate(
        self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]
    ) -> Weights:
        weighted = getattr(self.params, "weighted", True)
        w = [float(u.n_train) if weighted else 1.0 for u in updates]
        if sum(w) <= 0:  # every site reported 0 cases: fall back to the plain mean
            w = [1.0] * len(updates)
        return weighted_average([u.weights for u in updates], w)
