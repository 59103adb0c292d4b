"""FedAvg (McMahan et al. 2017; the FeTS study) and FedProx (Li et al. 2020): FedAvg's
aggregation plus a proximal term ``mu / 2 ||w - w_global||^2`` in each site's loss.

Both take the parallel plans' parameters (participation, optimizer state). Both stream
(``Strategy.streams``): the aggregator holds about one model whatever the number of sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import Field

from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.parallel import (
    ParallelParams,
    ParallelStrategy,
    fedavg_coefficients,
    fedavg_weights,
)
from fedseg.model.weights import Weights


class FedAvgParams(ParallelParams):
    weighted: bool = Field(True, description="weight sites by training cases (false: plain mean)")


class FedProxParams(FedAvgParams):
    mu: float = Field(0.01, ge=0, description="proximal term strength")


MP = TypeVar("MP", bound=FedAvgParams)


class MeanStrategy(ParallelStrategy[MP]):
    """A plan whose new model is FedAvg's mean of the round's updates (it streams, and the
    model without one site follows from the mean: ``mean_weights``)."""

    streams = True

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        return fedavg_weights(updates, self.params.weighted)

    def mean_weights(self, updates: Sequence[SiteUpdate]) -> list[float] | None:
        return fedavg_coefficients(updates, self.params.weighted)


class FedAvg(MeanStrategy[FedAvgParams]):
    """FedAvg: the mean of the sites' weights, weighted by their training cases
    (``weighted: false``: plain mean)."""


class FedProx(MeanStrategy[FedProxParams]):
    """FedProx: sites train with the proximal term of strength ``mu``; FedAvg aggregation."""

    def proximal_mu(self) -> float:
        return float(self.params.mu)
