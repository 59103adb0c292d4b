"""What every parallel plan shares: partial participation and optimizer-state treatment.

A ``ParallelStrategy`` subclass writes only ``combine`` (the new global model from the round's
updates) and, if it keeps server state, ``server_state``/``load_server_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedseg.federation.rounds.aggregation import _cast_like, weighted_average
from fedseg.federation.rounds.optimizer_state import OptimizerMode, average_states
from fedseg.federation.rounds.participation import sample_sites
from fedseg.federation.rounds.strategy import SiteTask, SiteUpdate, Strategy
from fedseg.model.weights import Weights

OPT_PREFIX = "optimizer/"


class ParallelParams(BaseModel):
    """Parameters every plan takes. ``fraction`` or ``sites_per_round`` (not both) draw the
    sites that train each round from ``participation_seed``; the others only validate."""

    model_config = ConfigDict(extra="forbid")

    fraction: float | None = Field(None, gt=0, le=1, description="share of sites per round")
    sites_per_round: int | None = Field(None, ge=1, description="sites per round")
    participation_seed: int = 0
    optimizer_state: OptimizerMode = "keep-local"

    def model_post_init(self, __context: object) -> None:
        if self.fraction is not None and self.sites_per_round is not None:
            raise ValueError("give fraction or sites_per_round, not both")


def case_weights(updates: Sequence[SiteUpdate]) -> list[float]:
    """Training cases per update (all 1 when every site reported 0)."""
    w = [float(u.n_train) for u in updates]
    return w if sum(w) > 0 else [1.0] * len(updates)


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


class ParallelStrategy(Strategy):
    """Base of the parallel plans: configure_round samples sites and passes the
    optimizer-state treatment; aggregate combines and averages optimizer states."""

    Params = ParallelParams
    params: ParallelParams

    def __init__(self, params: BaseModel, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        self.optimizer_arrays: Weights | None = None

    def site_options(self) -> dict[str, float | int | str | bool]:
        """Options sent with every training task (subclasses add theirs)."""
        return {"optimizer": self.params.optimizer_state}

    def configure_round(self, rnd: int, sites: Sequence[str]) -> dict[str, SiteTask]:
        p = self.params
        trainers = set(
            sample_sites(sites, rnd, p.participation_seed, p.fraction, p.sites_per_round)
        )
        opts = self.site_options()
        opt = self.optimizer_arrays if p.optimizer_state == "average" else None
        return {
            s: SiteTask(validate=True, epochs=self.local_epochs, options=opts, optimizer_state=opt)
            if s in trainers
            else SiteTask(validate=True, epochs=0)
            for s in sites
        }

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        raise NotImplementedError

    def aggregate(
        self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]
    ) -> Weights:
        new = self.combine(rnd, global_weights, updates)
        if self.params.optimizer_state == "average":
            with_state = [u for u in updates if u.optimizer_state]
            avg = average_states(
                [u.optimizer_state or {} for u in with_state], case_weights(with_state)
            ) if with_state else None  # fmt: skip
            if avg is not None:
                self.optimizer_arrays = avg
        return new

    # -- checkpointed state -------------------------------------------------------------
    def server_state(self) -> dict[str, np.ndarray]:
        return {}

    def load_server_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``server_state`` returned."""

    def state_dict(self) -> dict[str, np.ndarray]:
        out = dict(self.server_state())
        for k, v in (self.optimizer_arrays or {}).items():
            out[OPT_PREFIX + k] = v
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        opt = {k[len(OPT_PREFIX) :]: v for k, v in state.items() if k.startswith(OPT_PREFIX)}
        self.optimizer_arrays = opt or None
        self.load_server_state({k: v for k, v in state.items() if not k.startswith(OPT_PREFIX)})


def fedavg_weights(updates: Sequence[SiteUpdate], weighted: bool = True) -> Weights:
    """The FedAvg mean of the updates (by training cases, or plain)."""
    w = case_weights(updates) if weighted else [1.0] * len(updates)
    return weighted_average([u.weights for u in updates], w)
