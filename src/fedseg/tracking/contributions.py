"""How much each site's data improves the global model, from what the run store holds.

Cheap estimate (no extra training, no per-site weights needed). In round r, with site
updates ``u_i = w_i - g`` (``update_norm`` = |u_i|), the aggregate step
``D = sum_i p_i u_i`` (``p_i`` = training-case weight) and ``update_distance`` =
|w_i - a| = |u_i - D|, the store's two norms give the inner products exactly:

    |D|^2      = sum_i p_i |u_i|^2 - sum_i p_i |u_i - D|^2
    <u_i, D>   = (|u_i|^2 - |u_i - D|^2 + |D|^2) / 2

so each site's share of the step along its own direction, ``s_i = p_i <u_i, D> / |D|^2``
(the shares sum to 1), and its alignment ``cos_i = <u_i, D> / (|u_i| |D|)``. The round's
change of the federation's validation Dice (model r vs model r-1, pooled over sites) is
attributed to sites by share: a first-order (linear) attribution that assumes the Dice
gain of the step is along D. A site whose update points away from the consensus (bad
labels, a different scanner) gets a small or negative share. "others" uses only the other
sites' validation, i.e. what the site's data brings to everyone else.

The honest measure is leave-one-site-out: re-run the federation without the site and
compare the best Dice on the remaining sites (``loso_contributions``).

Under secure aggregation, HE or site-level DP no single update's norm exists in the store
(the aggregator saw none, or must not keep one): ``unavailable`` says so in one line and
only the leave-one-site-out measure remains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.privacy.config import PrivacyConfig
from fedseg.privacy.visibility import withheld_by
from fedseg.run_folder import SiteRoundStatus
from fedseg.tracking.curves import Curves, federation_curve, site_curves
from fedseg.tracking.store import RunStore


@dataclass(frozen=True)
class RoundShares:
    """Per-site weight, share of the aggregate step and alignment in one round."""

    round: int
    weight: dict[str, float]
    share: dict[str, float]
    cos: dict[str, float]
    step_norm: float


@dataclass(frozen=True)
class SiteContribution:
    """A site's contribution summed over the rounds where it could be computed."""

    site: str
    rounds: int
    mean_weight: float
    mean_share: float
    mean_cos: float
    dice_gain: float  # federation Dice change attributed to the site (sum over rounds)
    dice_gain_others: float  # same, on the other sites' validation only
    loso: float | None = None  # best Dice of the others with the site minus without it


def unavailable(privacy: PrivacyConfig | None) -> str | None:
    """Why the update-based estimate does not exist for a run with this ``privacy``
    section (None: it does)."""
    key = withheld_by(privacy) if privacy is not None else None
    if key is None:
        return None
    return (
        f"site contributions from updates are not available: the aggregator saw no single "
        f"site's update ({key}); --loso (leave one site out) still works"
    )


def round_shares(
    n_train: dict[str, float], norm: dict[str, float], dist: dict[str, float]
) -> tuple[dict[str, float], dict[str, float], dict[str, float], float]:
    """``(weights, shares, cos, |D|)`` from one round's case counts, update norms, distances."""
    sites = sorted(s for s in n_train if s in norm and s in dist and n_train[s] > 0)
    total = sum(n_train[s] for s in sites)
    if len(sites) < 2 or total <= 0:
        return {}, {}, {}, float("nan")
    p = {s: n_train[s] / total for s in sites}
    d2 = sum(p[s] * norm[s] ** 2 for s in sites) - sum(p[s] * dist[s] ** 2 for s in sites)
    if d2 <= 1e-24:
        return p, {}, {}, 0.0
    inner = {s: (norm[s] ** 2 - dist[s] ** 2 + d2) / 2 for s in sites}
    share = {s: p[s] * inner[s] / d2 for s in sites}
    cos = {
        s: float(np.clip(inner[s] / (norm[s] * math.sqrt(d2)), -1, 1)) if norm[s] > 0 else 0.0
        for s in sites
    }
    return p, share, cos, math.sqrt(d2)


def store_shares(store: RunStore) -> list[RoundShares]:
    """``RoundShares`` of every round whose ok sites all reported norms and distances."""
    by_round: dict[int, list] = {}
    for r in store.site_rounds():
        if r.status == SiteRoundStatus.OK:
            by_round.setdefault(r.round, []).append(r)
    out: list[RoundShares] = []
    for rnd, rows in sorted(by_round.items()):
        if any(r.update_norm is None or r.update_distance is None for r in rows):
            continue
        p, share, cos, dn = round_shares(
            {r.site: float(r.n_train or 0) for r in rows},
            {r.site: float(r.update_norm) for r in rows},
            {r.site: float(r.update_distance) for r in rows},
        )
        if share:
            out.append(RoundShares(rnd, p, share, cos, dn))
    return out


def contributions(
    store: RunStore, region: str = "mean", metric: str | None = None
) -> list[SiteContribution]:
    """Per-site cheap contribution estimate (see module docstring); sites sorted by name."""
    curves = site_curves(store, region, metric)
    shares = store_shares(store)
    sites = sorted(set(curves) | {s for rs in shares for s in rs.share})
    fed = federation_curve(curves)
    others = {s: federation_curve(curves, [o for o in curves if o != s]) for s in sites}
    out = []
    for site in sites:
        w, sh, cs, gain, gain_o, k = [], [], [], 0.0, 0.0, 0
        for rs in shares:
            if site not in rs.share:
                continue
            k += 1
            w.append(rs.weight[site])
            sh.append(rs.share[site])
            cs.append(rs.cos[site])
            # Round r turns model r-1 into model r.
            gain += rs.share[site] * _delta(fed, rs.round)
            gain_o += rs.share[site] * _delta(others[site], rs.round)
        out.append(SiteContribution(
            site, k, _mean(w), _mean(sh), _mean(cs), gain, gain_o,
        ))  # fmt: skip
    return out


def loso_contributions(full: Curves, without: dict[str, Curves]) -> dict[str, float]:
    """Leave-one-site-out: for each site, best pooled Dice of the other sites in the full run
    minus their best pooled Dice in the run without the site (positive: the site helps)."""
    out: dict[str, float] = {}
    for site, cur in without.items():
        rest = [s for s in full if s != site]
        with_site = federation_curve(full, rest)
        without_site = federation_curve(cur, [s for s in rest if s in cur])
        if with_site and without_site:
            out[site] = max(v.mean for v in with_site.values()) - max(
                v.mean for v in without_site.values()
            )
    return out


def leave_one_site_out(
    run: Path, run_without: Callable[[str], Path], sites: list[str] | None = None
) -> dict[str, float]:
    """Honest leave-one-site-out: ``run_without(site)`` runs (or finds) the federation of
    the same plan without ``site`` and returns its run folder; the result per site is
    ``loso_contributions`` of the two runs' ``mean`` Dice curves. Costs one federation per
    site; the caller (the CLI) supplies the federation, keeping this layer below it."""
    from fedseg.tracking.status import open_run

    with open_run(run) as store:
        full = site_curves(store, "mean")
    without: dict[str, Curves] = {}
    for site in sites if sites is not None else sorted(full):
        with open_run(run_without(site)) as store:
            without[site] = site_curves(store, "mean")
    return loso_contributions(full, without)


def _delta(curve: dict, rnd: int) -> float:
    if rnd in curve and rnd - 1 in curve:
        return float(curve[rnd].mean - curve[rnd - 1].mean)
    return 0.0


def _mean(x: list[float]) -> float:
    return float(np.mean(x)) if x else float("nan")
