"""Robust aggregation against broken or malicious sites: coordinate-wise median,
trimmed mean (Yin et al. 2018) and (multi-)Krum (Blanchard et al. 2017).

All three ignore the training-case counts (a site could lie about them). None of them
streams (``Strategy.streams``): each needs every update of the round at once, so the
aggregator holds all of them in memory, n_sites x the model's size (at FeTS size, 120 MB
per site; Krum also builds an n_sites x n_sites distance matrix over the flattened models).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from fedseg.federation.rounds.strategies.base import SiteUpdate
from fedseg.federation.rounds.strategies.parallel import (
    ParallelParams,
    ParallelStrategy,
    map_arrays,
)
from fedseg.model.weights import Weights


def coordinate_median(global_weights: Weights, updates: Sequence[Weights]) -> Weights:
    """Median of every coordinate over the updates (mean of the middle two for even n)."""
    return map_arrays(global_weights, updates, lambda s: np.median(s, axis=0))


def n_trimmed(n: int, beta: float) -> int:
    """Updates dropped at each end of every coordinate: ``floor(beta * n)``, leaving >= 1."""
    return min(int(np.floor(beta * n)), (n - 1) // 2)


def trimmed_mean(global_weights: Weights, updates: Sequence[Weights], beta: float) -> Weights:
    """Per coordinate: drop the ``n_trimmed`` lowest and highest values, mean the rest."""
    k = n_trimmed(len(updates), beta)

    def fn(s: np.ndarray) -> np.ndarray:
        s = np.sort(s, axis=0)
        return s[k : len(s) - k].mean(axis=0)

    return map_arrays(global_weights, updates, fn)


def krum_scores(updates: Sequence[Weights], f: int) -> np.ndarray:
    """Krum score of each update: the sum of its squared L2 distances (over the floating
    arrays) to its ``n - f - 2`` nearest other updates (at least 1)."""
    n = len(updates)
    keys = [k for k, v in updates[0].items() if v.dtype.kind == "f"]
    flat = np.stack([np.concatenate([u[k].astype(np.float64).ravel() for k in keys])
                     for u in updates])  # fmt: skip
    sq = (flat * flat).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0)
    k = max(1, n - f - 2)
    scores = np.empty(n)
    for i in range(n):
        others = np.sort(np.delete(d2[i], i))
        scores[i] = others[: min(k, n - 1)].sum()
    return scores


def krum_select(updates: Sequence[Weights], f: int, m: int = 1) -> list[int]:
    """Indices of the ``m`` updates with the lowest Krum scores (ties: lower index)."""
    if len(updates) == 1:
        return [0]
    scores = krum_scores(updates, f)
    return [int(i) for i in np.argsort(scores, kind="stable")[: max(1, min(m, len(updates)))]]


def krum(global_weights: Weights, updates: Sequence[Weights], f: int, m: int = 1) -> Weights:
    """Krum (m = 1: the best-scored update) or multi-Krum (plain mean of the m best)."""
    chosen = [updates[i] for i in krum_select(updates, f, m)]
    return map_arrays(global_weights, chosen, lambda s: s.mean(axis=0))


class TrimmedMeanParams(ParallelParams):
    beta: float = Field(0.2, ge=0, lt=0.5, description="share trimmed at each end")


class KrumParams(ParallelParams):
    f: int = Field(1, ge=0, description="number of byzantine sites tolerated")
    m: int = Field(1, ge=1, description="updates averaged (1: Krum, >1: multi-Krum)")


class Median(ParallelStrategy[ParallelParams]):
    """Coordinate-wise median of the sites' weights. Memory: n_sites x the model (all
    updates at once)."""

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        return coordinate_median(global_weights, [u.weights for u in updates])


class TrimmedMean(ParallelStrategy[TrimmedMeanParams]):
    """Coordinate-wise mean after dropping the ``beta`` share of values at each end.
    Memory: n_sites x the model (all updates at once)."""

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        return trimmed_mean(global_weights, [u.weights for u in updates], self.params.beta)


class Krum(ParallelStrategy[KrumParams]):
    """(Multi-)Krum: the update(s) closest to their ``n - f - 2`` nearest neighbours.
    Memory: n_sites x the model (all updates at once)."""

    def __init__(self, params: KrumParams, local_epochs: int) -> None:
        super().__init__(params, local_epochs)
        #: the sites whose updates the last round kept
        self.selected: list[str] = []

    def combine(self, rnd: int, global_weights: Weights, updates: Sequence[SiteUpdate]) -> Weights:
        p = self.params
        idx = krum_select([u.weights for u in updates], p.f, p.m)
        self.selected = [updates[i].site for i in idx]
        return krum(global_weights, [u.weights for u in updates], p.f, p.m)
