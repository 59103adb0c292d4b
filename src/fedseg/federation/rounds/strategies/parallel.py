"""What every parallel plan shares: partial participation, and the array helpers of their math.

A ``ParallelStrategy`` subclass writes only ``combine`` (the new global model from the
round's updates) and, if it keeps server state, extends ``state_dict``/``load_state_dict``
under its own namespaces (``model.weights.nest``). The optimizer-state treatment is the
base class's (``strategies.base``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from pydantic import Field

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


class ParallelParams(StrategyParams):
    """Parameters every parallel plan takes. ``fraction`` or ``sites_per_round`` (not both)
    draw the sites that train each round from ``participation_seed``; the others only
    validate."""

    fraction: float | None = Field(None, gt=0, le=1, description="share of sites per round")
    sites_per_round: int | None = Field(None, ge=1, description="sites per round")
    participation_seed: int = 0

    def model_post_init(self, __context: object) -> None:
        if self.fraction is not None and self.sites_per_round is not None:
            raise ValueError("give fraction or sites_per_round, not both")


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


def fedavg_weights(updates: Sequence[SiteUpdate], weighted: bool = True) -> Weights:
    """The FedAvg mean of the updates (by training cases, or plain)."""
    w = case_weights(updates) if weighted else [1.0] * len(updates)
    return weighted_average([u.weights for u in updates], w)


class ParallelStrategy(Strategy[PP]):
    """Base of the parallel plans: every site validates each round; the sites drawn by the
    participation parameters train ``local_epochs`` epochs."""

    def configure_round(self, rnd: int, sites: Sequence[str]) -> dict[str, SiteTask]:
        p = self.params
        trainers = set(
            sample_sites(sites, rnd, p.participation_seed, p.fraction, p.sites_per_round)
        )
        train = self.training_task(self.local_epochs)
        return {s: train if s in trainers else SiteTask(validate=True, epochs=0) for s in sites}
