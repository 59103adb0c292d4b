"""What every parallel plan shares: partial participation, and the array helpers of their math.

A ``ParallelStrategy`` subclass writes only ``combine`` (the new global model from the
round's updates) and, if it keeps server state, extends ``state_dict``/``load_state_dict``
under its own namespaces (``model.weights.nest``). The optimizer-state treatment is the
base class's (``strategies.base``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

import numpy as np
from pydantic import Field, field_validator

from fedseg.federation.rounds.aggregation import _cast_like, weighted_average
from fedseg.federation.rounds.participation import sample_sites
from fedseg.federation.rounds.strategies.base import (
    SiteTask,
    SiteUpdate,
    Strategy,
    StrategyParams,
    case_weights,
)
from fedseg.model.weights import Weights

#: ``validators`` values: everyone, the round's trainers, or the others every K-th round
_VALIDATORS = re.compile(r"^(all|trainers|every:([1-9][0-9]*))$")


class ParallelParams(StrategyParams):
    """Parameters every parallel plan takes. ``fraction`` or ``sites_per_round`` (not both)
    draw the sites that train each round from ``participation_seed``. ``validators`` says
    which of the others validate the round's model: ``all`` (every site, every round),
    ``trainers`` (none: only the trainers validate), ``every:K`` (all in rounds 1, 1 + K,
    1 + 2K, ..., i.e. models 0, K, 2K, ...; only the trainers in the rounds between). A
    site that neither trains nor validates gets no message that round (``not asked``)."""

    fraction: float | None = Field(None, gt=0, le=1, description="share of sites per round")
    sites_per_round: int | None = Field(None, ge=1, description="sites per round")
    participation_seed: int = 0
    validators: str = Field(
        "all", description="who validates each round's model: all, trainers, or every:K "
        "(the sites that do not train validate every K-th round)",
    )  # fmt: skip

    @field_validator("validators")
    @classmethod
    def _validators(cls, v: str) -> str:
        if not _VALIDATORS.match(v):
            raise ValueError(f"{v!r}: use all, trainers or every:K with K a whole number >= 1")
        return v

    def model_post_init(self, __context: object) -> None:
        if self.fraction is not None and self.sites_per_round is not None:
            raise ValueError("give fraction or sites_per_round, not both")

    def others_validate(self, rnd: int) -> bool:
        """Whether the sites that do not train in round ``rnd`` validate its model."""
        m = _VALIDATORS.match(self.validators)
        assert m is not None
        if m.group(2) is not None:
            return (rnd - 1) % int(m.group(2)) == 0
        return self.validators == "all"


PP = TypeVar("PP", bound=ParallelParams)


def map_arrays(
    global_weights: Weights, updates: Sequence[Weights], fn: Callable[[np.ndarray], np.ndarray]
) -> Weights:
    """``fn`` on each key's updates stacked as float64 (shape (n_sites, *array_shape)),
    cast back to the key's dtype (integers rounded)."""
    out: Weights = {}
    for k, ref in global_weights.items():
        stack = np.stack([u[k].astype(np.float64) for u in updates])
        out[k] = _cast_like(fn(stack), ref.dtype)
    return out


def fedavg_coefficients(updates: Sequence[SiteUpdate], weighted: bool = True) -> list[float]:
    """FedAvg's weight of each update, unnormalised: its training cases, or 1 each."""
    return case_weights(updates) if weighted else [1.0] * len(updates)


def fedavg_weights(updates: Sequence[SiteUpdate], weighted: bool = True) -> Weights:
    """The FedAvg mean of the updates (by training cases, or plain)."""
    return weighted_average([u.weights for u in updates], fedavg_coefficients(updates, weighted))


class ParallelStrategy(Strategy[PP]):
    """Base of the parallel plans: the sites drawn by the participation parameters (never a
    busy one while enough are free) validate and train ``local_epochs`` epochs; the other
    free sites validate when ``validators`` says so and are otherwise not asked."""

    def trainers(self, rnd: int, sites: Sequence[str], busy: Collection[str]) -> list[str]:
        """The round's training sites: the participation draw (a selection strategy
        overrides this and keeps the round's task layout)."""
        p = self.params
        return sample_sites(sites, rnd, p.participation_seed, p.fraction, p.sites_per_round, busy)

    def configure_round(
        self, rnd: int, sites: Sequence[str], busy: Collection[str] = ()
    ) -> dict[str, SiteTask]:
        p = self.params
        trainers = set(self.trainers(rnd, sites, busy))
        train = self.training_task(self.local_epochs)
        others = p.others_validate(rnd)
        return {
            s: train if s in trainers else SiteTask(validate=True, epochs=0)
            for s in sites
            if s in trainers or (others and s not in set(busy))
        }
