"""Sequential plans: the model travels from site to site (Chang et al. 2018).

One round is one visit: the visited site trains ``epochs_per_visit`` epochs on the model it
receives and its result is the next global model; every other site validates that model in
the same round, so there is a validation row per visit. ``cyclic``: ``cycles`` passes over
the sites, in a fixed order or shuffled each cycle (seeded); ``single-pass``: one pass.
A site that fails or times out is skipped (a warning in the run log) and the model goes on
to the next site unchanged. Which site trained each round is in ``site_rounds`` (the row
with a training loss) and the last one in the run store's ``last_trained`` meta entry.
With ``optimizer_state: average`` the visited site's optimizer state travels on with the
model (the base class's average of the one state sent). One site trains per round, so the
aggregator holds one update in memory (no streaming needed).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal, TypeVar

import numpy as np
from pydantic import Field

from fedseg.federation.rounds.aggregation import weighted_average
from fedseg.federation.rounds.strategies.base import (
    SiteTask,
    SiteUpdate,
    Strategy,
    StrategyParams,
    case_weights,
)
from fedseg.model.weights import Weights


def visit_order(sites: Sequence[str], cycle: int, order: str, seed: int) -> list[str]:
    """The sites in visiting order for ``cycle`` (0-based): as listed, or a permutation
    drawn from (seed, cycle) that does not depend on the order ``sites`` are given in."""
    if order == "fixed":
        return list(sites)
    pool = sorted(sites)
    perm = np.random.default_rng(np.random.SeedSequence([seed, cycle])).permutation(len(pool))
    return [pool[i] for i in perm]


def visited_site(sites: Sequence[str], rnd: int, order: str, seed: int) -> tuple[str, int]:
    """(site, cycle) of round ``rnd`` (from 1)."""
    n = len(sites)
    cycle, pos = divmod(rnd - 1, n)
    return visit_order(sites, cycle, order, seed)[pos], cycle


class SinglePassParams(StrategyParams):
    order: Literal["fixed", "shuffled"] = "fixed"
    epochs_per_visit: int | None = Field(None, ge=1, description="None: the plan's local_epochs")
    seed: int = 0
    validate_all: bool = Field(True, description="every site validates every visit's model")


class CyclicParams(SinglePassParams):
    cycles: int = Field(3, ge=1)


SP = TypeVar("SP", bound=SinglePassParams)


class SequentialStrategy(Strategy[SP]):
    """Base of the sequential plans: ``cycles`` passes over the sites, one visit a round."""

    skip_failed_sites = True

    @property
    def cycles(self) -> int:
        return 1

    def planned_rounds(self, plan_rounds: int, n_sites: int) -> int:
        return self.cycles * n_sites

    def configure_round(
        self, rnd: int, sites: Sequence[str], busy: Collection[str] = ()
    ) -> dict[str, SiteTask]:
        # ``busy`` never happens: a straggler cut is refused for sequential plans
        p = self.params
        site, _ = visited_site(sites, rnd, p.order, p.seed)
        tasks = {site: self.training_task(p.epochs_per_visit or self.local_epochs)}
        if p.validate_all:
            tasks.update({s: SiteTask(validate=True, epochs=0) for s in sites if s != site})
        return tasks

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        # One trainer per round; the mean only matters if a plan ever sends two.
        if len(updates) == 1:
            return updates[0].weights
        return weighted_average([u.weights for u in updates], case_weights(updates))


class Cyclic(SequentialStrategy[CyclicParams]):
    """Cyclic weight transfer: ``cycles`` passes over the sites."""

    @property
    def cycles(self) -> int:
        return self.params.cycles


class SinglePass(SequentialStrategy[SinglePassParams]):
    """Single weight transfer: one pass over the sites."""
