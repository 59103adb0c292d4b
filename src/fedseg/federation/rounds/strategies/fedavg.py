"""FedAvg with participation and optimizer-state treatment, and FedProx (Li et al. 2020):
FedAvg's aggregation plus a proximal term ``mu / 2 ||w - w_global||^2`` in each site's loss."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from fedseg.federation.rounds.strategies.parallel import (
    ParallelParams,
    ParallelStrategy,
    fedavg_weights,
)
from fedseg.federation.rounds.strategy import SiteUpdate, register
from fedseg.model.weights import Weights


@register("fedavg")
class FedAvgPlan(ParallelStrategy):
    """FedAvg (McMahan et al. 2017): the mean of the sites' weights, by training cases
    (``weighted: false``: plain mean). Replaces the core's ``fedavg`` by a compatible one
    that also takes the plan parameters (participation, optimizer state)."""

    class Params(ParallelParams):
        weighted: bool = True

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        return fedavg_weights(updates, self.params.weighted)  # type: ignore[attr-defined]


@register("fedprox")
class FedProx(FedAvgPlan):
    """FedProx: sites train with the proximal term of strength ``mu``; FedAvg aggregation."""

    class Params(FedAvgPlan.Params):
        mu: float = Field(0.01, ge=0, description="proximal term strength")

    def site_options(self) -> dict[str, float | int | str | bool]:
        return {**super().site_options(), "proximal_mu": float(self.params.mu)}  # type: ignore[attr-defined]
