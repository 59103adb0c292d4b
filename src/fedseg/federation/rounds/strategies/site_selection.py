"""Plans that choose each round's trainers by simulated speed: ``fastest-k`` and
``select-utility`` (in the spirit of the FeTS 2021 challenge's winners, who picked the
sites that gave the most Dice per simulated hour).

Both take the parallel plans' parameters: ``sites_per_round`` (or ``fraction``) is k,
counted as partial participation counts it (``participation.n_participants``); a busy
site (cut after quorum) is never chosen while enough are free; the others validate as
``validators`` says; aggregation is FedAvg's (they stream). A site's expected time in a
round is ``sim_time.site_round_time`` of its speed (``sim_time.site_speeds`` drawn from
``speed_seed``, the seed the benchmark's clock uses) and of the case counts it declared
when it joined (``Strategy.set_site_cases``; a site that declared nothing counts as the
median declared site). These are simulation strategies: at real sites the speed would be
each site's measured round time.

- ``fastest-k``: the k free sites with the smallest expected round time (ties by name).
- ``select-utility`` (Oort, Lai et al., OSDI 2021): a site seen before has the utility
  ``n_i x loss_i``, its training cases times its last mean training loss (Oort's
  statistical utility is ``n_i x sqrt(mean of squared per-case losses)``; fedseg's sites
  send only the mean training loss, so that stands in), times the system penalty
  ``(T / t_i) ** alpha`` when its expected time ``t_i`` is above the deadline ``T``
  (``deadline_s``; None: the k-th smallest expected time of the free sites, so the k fastest
  are never penalised). Each round ``round(epsilon x k)`` of the k slots (all k while no
  site has been seen) go to never-seen sites, drawn by the participation draw
  (``participation.sample_sites`` over them with ``participation_seed``): deterministic
  given the plan's seed; the other slots go to the seen sites of highest utility (ties by
  name); slots one kind cannot fill go to the other. Oort's staleness bonus and its
  adaptive deadline are left out. The losses seen survive a restart (``state_dict``
  namespace ``utility/``). Under secure aggregation no single site's loss is known, so
  every slot explores: the plan is then partial participation's draw.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

import numpy as np
from pydantic import Field

from fedseg.federation.rounds.participation import n_participants, sample_sites
from fedseg.federation.rounds.sim_time import site_round_time, site_speeds
from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.fedavg import FedAvgParams, MeanStrategy
from fedseg.model.weights import Weights, nest, unnest

#: namespace of select-utility's per-site (n_train, loss) in ``state_dict``
UTILITY = "utility"


class FastestKParams(FedAvgParams):
    speed_seed: int = Field(0, description="seed of the sites' simulated speeds (sim_time)")


class SelectUtilityParams(FastestKParams):
    alpha: float = Field(2.0, ge=0, description="system penalty exponent (Oort: 2)")
    epsilon: float = Field(0.2, ge=0, le=1, description="share of slots exploring unseen sites")
    deadline_s: float | None = Field(
        None, gt=0, description="round deadline T in simulated seconds (None: k-th fastest)"
    )


def expected_times(
    sites: Sequence[str], cases: Mapping[str, tuple[int, int]], epochs: int, seed: int,
    steps: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Each site's expected simulated round time as a trainer (``sim_time``), from its
    declared (n_train, n_val) and its local work (``epochs``, or ``steps`` when > 0); an
    undeclared site counts as the median declared one."""
    known = [cases[s] for s in sites if s in cases]
    median = (
        (int(np.median([c[0] for c in known])), int(np.median([c[1] for c in known])))
        if known else (1, 1)
    )  # fmt: skip
    counts = {s: cases.get(s, median) for s in sites}
    speeds = site_speeds({s: c[0] for s, c in counts.items()}, seed)
    return {s: site_round_time(speeds[s], *counts[s], epochs, steps=steps) for s in sites}


def fastest(times: Mapping[str, float], k: int, busy: Collection[str] = ()) -> list[str]:
    """The ``k`` sites of ``times`` not ``busy`` with the smallest time (ties by name)."""
    free = sorted((t, s) for s, t in times.items() if s not in set(busy))
    return [s for _, s in free[:k]]


def utility(
    n_train: int, loss: float, t: float, deadline_s: float, alpha: float
) -> float:  # fmt: skip
    """Oort's utility with fedseg's mean loss: ``n x loss``, times ``(T / t) ** alpha``
    when ``t`` is above the deadline ``T``."""
    u = n_train * loss
    return u * (deadline_s / t) ** alpha if t > deadline_s else u


def select_by_utility(
    times: Mapping[str, float], seen: Mapping[str, tuple[int, float]], k: int, rnd: int,
    seed: int, alpha: float, epsilon: float, deadline_s: float | None,
    busy: Collection[str] = (),
) -> list[str]:  # fmt: skip
    """The ``k`` trainers of round ``rnd`` (module doc): exploration of the free sites not in
    ``seen`` by the participation draw, exploitation of the seen ones by utility."""
    taken = set(busy)
    free = sorted(s for s in times if s not in taken)
    k = min(k, len(free))
    unseen = [s for s in free if s not in seen]
    known = [s for s in free if s in seen]
    explore = k if not known else min(len(unseen), round(epsilon * k))
    explore = max(explore, k - len(known))
    if deadline_s is None:
        deadline_s = sorted(times[s] for s in free)[k - 1] if k else math.inf
    scored = sorted(
        known, key=lambda s: (-utility(seen[s][0], seen[s][1], times[s], deadline_s, alpha), s)
    )
    chosen = scored[: k - explore]
    chosen += sample_sites(unseen, rnd, seed, count=explore) if explore else []
    return sorted(chosen)


SP = TypeVar("SP", bound=FastestKParams)


class _SpeedAware(MeanStrategy[SP]):
    """Base of the two: the declared case counts, the trainers' expected times (each
    overrides ``trainers``), FedAvg's aggregation."""

    def __init__(self, params: SP, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        #: each site's declared (training, validation) cases
        self.cases: dict[str, tuple[int, int]] = {}

    def set_site_cases(self, cases: Mapping[str, tuple[int, int]]) -> None:
        self.cases = dict(cases)

    def k(self, n_sites: int) -> int:
        return n_participants(n_sites, self.params.fraction, self.params.sites_per_round)

    def times(self, sites: Sequence[str]) -> dict[str, float]:
        return expected_times(sites, self.cases, self.local_epochs, self.params.speed_seed,
                              self.local_steps or 0)  # fmt: skip


class FastestK(_SpeedAware[FastestKParams]):
    """``fastest-k``: the k free sites with the smallest expected simulated round time."""

    def trainers(self, rnd: int, sites: Sequence[str], busy: Collection[str]) -> list[str]:
        return fastest(self.times(sites), self.k(len(sites)), busy)


class SelectUtility(_SpeedAware[SelectUtilityParams]):
    """``select-utility``: Oort-style utility with epsilon-exploration (module doc)."""

    def __init__(self, params: SelectUtilityParams, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        #: each site's last (training cases, mean training loss) seen in an update
        self.seen: dict[str, tuple[int, float]] = {}

    def trainers(self, rnd: int, sites: Sequence[str], busy: Collection[str]) -> list[str]:
        p = self.params
        return select_by_utility(
            self.times(sites), {s: v for s, v in self.seen.items() if s in sites},
            self.k(len(sites)), rnd, p.participation_seed, p.alpha, p.epsilon, p.deadline_s,
            busy,
        )  # fmt: skip

    def aggregate(
        self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]
    ) -> Weights:
        for u in updates:
            if math.isfinite(u.train_loss):  # not the hidden sum's (no single loss)
                self.seen[u.site] = (int(u.n_train), float(u.train_loss))
        return super().aggregate(rnd, global_weights, updates)

    def state_dict(self) -> Weights:
        seen = {s: np.array([n, loss], np.float64) for s, (n, loss) in self.seen.items()}
        return {**super().state_dict(), **nest(UTILITY, seen)}

    def load_state_dict(self, state: Weights) -> None:
        super().load_state_dict(state)
        self.seen = {s: (int(v[0]), float(v[1])) for s, v in unnest(UTILITY, state).items()}
