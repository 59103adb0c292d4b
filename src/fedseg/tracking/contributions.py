"""How much each site's data improves the global model for the other sites, from what the
run store holds: no re-training.

**From the cross-site evidence** (``estimate_contributions``, the default; needs the
plan's ``cross_site`` rows). FedAvg: ``g = sum_k p_k w_k``, so the aggregate without site i
is ``g_{-i} = g - p_i/(1-p_i) (w_i - g)``.

*Measured* (plan ``cross_site.leave_one_out: true``, under a mean plan): the
aggregator sends ``g_{-i}`` with ``w_i`` to i's evaluators, which validate it paired with
``g`` on their cases (``without_dice_diff`` rows). Site i's part of round r in a region is
``-(Dice(g_{-i}) - Dice(g))``, case-weighted over its evaluators, with the same SE parts as
below. This is the exact one-round leave-one-out (what the others' Dice would have been had
the round left site i out, the rest unchanged; GTG-Shapley's round-wise reconstruction,
Liu et al. 2022, with one subset per site). It needs no curvature correction: ``g_{-i}``
is as close to ``g`` as the site's weight makes it, where ``w_i`` is a whole local
training away.

*First-order* (the default), for rounds whose models without the site did not come back
(``leave_one_out: false``, older runs, a server-step or robust plan): what site j's Dice gains
from including i is ``p_i/(1-p_i) * (Dice_j(w_i) - Dice_j(g))``: the scaled paired
difference the cross-site rows hold. Every local model is a bit worse than the average of
all (a curvature term common to all sites), so each round's row effects are centred on
their ``p``-weighted mean (the first-order terms sum to zero). A site's contribution in a
region is ``sum_r p_i/(1-p_i) * (a_i^r - sum_k p_k a_k^r)``, ``a_i^r`` the case-weighted
mean over the evaluators j != i of the local model of round r (``tracking.evidence``):
negative means the other sites would do better without it. Its SE: the case part of each
round adds up linearly over rounds (the same cases are re-measured: fully correlated, the
conservative bound), the between-evaluator part (DerSimonian-Laird) in quadrature. The
region where a site is worst ranks it; verdict *harmful* when the 95 % interval is below
0, *helps* above 0, else *neutral*. Under this first-order (additive) utility, Shapley
values equal these leave-one-out values. It is exact for FedAvg only to first order.
Measured and first-order parts of different rounds add up to one sum (they estimate the
same quantity); ``ContributionEstimate.measured_rounds`` says which were measured.

**From update sizes** (``contributions``, the fallback for runs without cross-site rows).
In round r, with site updates ``u_i = w_i - g`` (``update_norm`` = |u_i|), the aggregate step
``D = sum_i p_i u_i`` (``p_i`` = training-case weight) and ``update_distance`` =
|w_i - a| = |u_i - D|, the store's two norms give the inner products exactly:

    |D|^2      = sum_i p_i |u_i|^2 - sum_i p_i |u_i - D|^2
    <u_i, D>   = (|u_i|^2 - |u_i - D|^2 + |D|^2) / 2

so each site's share of the step along its own direction, ``s_i = p_i <u_i, D> / |D|^2``
(the shares sum to 1), and its alignment ``cos_i = <u_i, D> / (|u_i| |D|)``. The round's
change of the federation's validation Dice (model r vs model r-1, pooled over sites) is
attributed to sites by share: it measures alignment with the consensus, not harm (a site
with another scanner gets a small share too; ``SHARES_NOTE``).

The honest measure is leave-one-site-out: re-run the federation without the site and
compare the best Dice on the remaining sites (``loso_contributions``).

Under secure aggregation, HE or site-level DP no single update or local model exists
outside its site: ``unavailable`` says so in one line and only the leave-one-site-out
measure remains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedseg.data.labels import REGIONS
from fedseg.plan import AlarmConfig
from fedseg.privacy.config import PrivacyConfig
from fedseg.privacy.visibility import withheld_by
from fedseg.run_folder import SiteRoundStatus, Task
from fedseg.tracking.cross_matrix import cross_cells
from fedseg.tracking.curves import Curves, excused_sites, federation_curve, site_curves
from fedseg.tracking.evidence import ALL_GROUPS, case_variance, dersimonian_laird, with_mean_rows
from fedseg.tracking.store import CROSS_DICE_DIFF, WITHOUT_DICE_DIFF, CrossRow, RunStore

#: what the fallback estimate from update sizes is, in one line
SHARES_NOTE = (
    "no cross-site evidence in this run (plan cross_site): estimate from update sizes, "
    "each site's share of the aggregate step times the pooled score's change; it measures "
    "alignment with the other sites, not harm"
)
#: the z of the intervals behind a verdict (95 %)
Z95 = 1.959963984540054


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


@dataclass(frozen=True)
class ContributionEstimate:
    """A site's first-order leave-one-out contribution from the cross-site evidence: the
    Dice the *other* sites gain from including it (summed over rounds; negative: harmful)
    in ``region``, the region where it is worst, which ranks it; ``se``, the 95 % interval
    ``low``-``high`` and the ``verdict`` (harmful, neutral, helps) there; ``per_region``
    and ``per_region_se`` for ET, TC, WT and mean; ``n_cases`` the evaluators' cases,
    ``evaluators`` the sites that validated its local models, ``model_rounds`` theirs,
    ``measured_rounds`` those whose part was measured on the model without the site (the
    others' part is first-order)."""

    site: str
    effect: float
    se: float
    low: float
    high: float
    verdict: str
    region: str
    per_region: dict[str, float]
    per_region_se: dict[str, float]
    n_cases: int
    evaluators: tuple[str, ...]
    model_rounds: tuple[int, ...]
    measured_rounds: tuple[int, ...] = ()


def _weights(store: RunStore) -> dict[int, dict[str, float]]:
    """Per round, each ok site's training cases (the FedAvg weight before normalising)."""
    out: dict[int, dict[str, float]] = {}
    for r in store.site_rounds():
        if r.status == SiteRoundStatus.OK and r.n_train:
            out.setdefault(r.round, {})[r.site] = float(r.n_train)
    return out


def _round_effects(
    rows: list[CrossRow], region: str, metric: str = CROSS_DICE_DIFF
) -> dict[str, tuple[float, float, float]]:
    """Per model site, one round's ``(a, case variance, evaluator variance or -1)``."""
    out = {}
    for site in sorted({r.model_site for r in rows}):
        cells = [c for c in cross_cells([r for r in rows if r.model_site == site],
                                        region=region, metric=metric)
                 if c.n > 0 and math.isfinite(c.mean)]  # fmt: skip
        if not cells:
            continue
        n = np.array([c.n for c in cells], dtype=np.float64)
        w = n / n.sum()
        means = np.array([c.mean for c in cells])
        v = np.array([case_variance(c.sd, c.n) for c in cells])
        tau2 = dersimonian_laird(means, v)
        out[site] = (float(np.sum(w * means)), float(np.sum(w**2 * v)),
                     -1.0 if tau2 is None else tau2 * float(np.sum(w**2)))  # fmt: skip
    return out


def _tau_floor(eff: dict[str, tuple[float, float, float]]) -> float:
    """The median of the sites' evaluator variances that could be estimated (0: none)."""
    taus = [t for _, _, t in eff.values() if t >= 0]
    return float(np.median(taus)) if taus else 0.0


#: one round's part of a site's contribution: (effect, case SE, evaluator variance)
_Part = tuple[float, float, float]


def _first_order(
    eff: dict[str, tuple[float, float, float]], w_round: dict[str, float]
) -> dict[str, _Part]:
    """Each site's first-order part of one round (module docstring) from its local models'
    row effects ``eff``; {} with fewer than two sites (nothing to centre on)."""
    if len(eff) < 2:
        return {}
    tau_floor = _tau_floor(eff)
    raw = {s: w_round.get(s, 0.0) for s in eff}
    if sum(raw.values()) <= 0:
        raw = dict.fromkeys(eff, 1.0)
    total = sum(raw.values())
    p = {s: v / total for s, v in raw.items()}
    # FedAvg weight of each site among all the round's trainers (not only those seen)
    all_total = sum(w_round.values()) or total
    out = {}
    for s, (a, vc, vt) in eff.items():
        share = (w_round.get(s, 0.0) or raw[s]) / all_total
        scale = share / (1 - share) if share < 1 else 0.0
        centred = a - sum(p[k] * eff[k][0] for k in eff)
        var_c = (1 - p[s]) ** 2 * vc + sum(p[k] ** 2 * eff[k][1] for k in eff if k != s)
        var_t = (1 - p[s]) ** 2 * max(vt, tau_floor) + sum(
            p[k] ** 2 * max(eff[k][2], tau_floor) for k in eff if k != s
        )
        out[s] = (scale * centred, scale * math.sqrt(var_c), scale**2 * var_t)
    return out


def _measured(eff: dict[str, tuple[float, float, float]]) -> dict[str, _Part]:
    """Each site's measured part of one round from the row effects of the round's models
    *without* it (``Dice(g_-i) - Dice(g)``): the others' gain from including it is minus
    that, its variance the rows' own (the evaluator part floored by the sites' median)."""
    tau_floor = _tau_floor(eff)
    return {s: (-a, math.sqrt(vc), max(vt, tau_floor)) for s, (a, vc, vt) in eff.items()}


def estimate_contributions(
    store: RunStore, *, upto_round: int | None = None, cfg: AlarmConfig | None = None,
    measured: bool = True,
) -> list[ContributionEstimate]:  # fmt: skip
    """Each site's leave-one-out contribution (module docstring: measured where the run has
    the models without each site, first-order elsewhere) from the cross-site rows made in
    rounds ``<= upto_round`` (all when None), most harmful first; [] when the run has none
    (privacy plans, runs without ``cross_site``, older runs, synthesis runs: see
    ``contributions`` and ``SHARES_NOTE``). ``cfg``: the alarm settings (``enabled: false``
    turns the estimate off too; default the plan's). ``measured: false`` ignores the models
    without each site (the first-order estimate alone, to compare the two)."""
    if (cfg is not None and not cfg.enabled) or store.meta.task() == Task.SYNTHESIS:
        return []
    metrics = (CROSS_DICE_DIFF, WITHOUT_DICE_DIFF) if measured else (CROSS_DICE_DIFF,)
    rows = [r for r in store.cross(upto_round=upto_round) if not r.home and r.metric in metrics]
    if not any(r.metric == CROSS_DICE_DIFF for r in rows):
        return []
    rows = with_mean_rows(rows)
    weights = _weights(store)
    by_round: dict[int, list[CrossRow]] = {}
    for r in rows:
        by_round.setdefault(r.model_round, []).append(r)
    sites = sorted({r.model_site for r in rows})
    effect = {(s, g): 0.0 for s in sites for g in ALL_GROUPS}
    se_case = dict.fromkeys(effect, 0.0)
    var_tau = dict.fromkeys(effect, 0.0)
    cases: dict[str, dict[str, int]] = {s: {} for s in sites}
    rounds: dict[str, set[int]] = {s: set() for s in sites}
    measured: dict[str, set[int]] = {s: set() for s in sites}
    for mr, rr in sorted(by_round.items()):
        for g in ALL_GROUPS:
            in_g = [r for r in rr if r.region == g]
            parts = _first_order(_round_effects(in_g, g), weights.get(mr, {}))
            without = _measured(_round_effects(in_g, g, WITHOUT_DICE_DIFF))
            parts.update(without)  # measured wherever the models without the site came back
            for s, (e, se, vt) in parts.items():
                effect[(s, g)] += e
                se_case[(s, g)] += se  # the same cases every round: added linearly
                var_tau[(s, g)] += vt
                if g == "mean":
                    rounds[s].add(mr)
                    if s in without:
                        measured[s].add(mr)
                    for r in in_g:
                        if r.model_site == s and r.metric == CROSS_DICE_DIFF:
                            cases[s][r.eval_site] = max(cases[s].get(r.eval_site, 0), r.summary.n)
    out = []
    for s in sites:
        if not rounds[s]:
            continue
        per = {g: effect[(s, g)] for g in ALL_GROUPS}
        per_se = {g: math.sqrt(se_case[(s, g)] ** 2 + var_tau[(s, g)]) for g in ALL_GROUPS}
        region = min(REGIONS, key=lambda g: per[g])
        e, se = per[region], per_se[region]
        low, high = e - Z95 * se, e + Z95 * se
        verdict = "harmful" if high < 0 else "helps" if low > 0 else "neutral"
        out.append(ContributionEstimate(
            s, e, se, low, high, verdict, region, per, per_se, sum(cases[s].values()),
            tuple(sorted(cases[s])), tuple(sorted(rounds[s])), tuple(sorted(measured[s])),
        ))  # fmt: skip
    return sorted(out, key=lambda c: (c.effect, c.site))


def estimate_kind(estimates: list[ContributionEstimate]) -> str:
    """How ``estimates`` were made, for titles: measured (the models without each site came
    back for every site-round), first-order, or the share of site-rounds measured."""
    total = sum(len(e.model_rounds) for e in estimates)
    measured = sum(len(e.measured_rounds) for e in estimates)
    if total and measured == total:
        return "leave-one-out measured on the models without each site"
    if not measured:
        return "first-order leave-one-out from the local models"
    return f"leave-one-out, measured in {measured} of {total} site-rounds, first-order in the rest"


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
    excused = excused_sites(store)
    fed = federation_curve(curves, excused=excused)
    others = {s: federation_curve(curves, [o for o in curves if o != s], excused)
              for s in sites}  # fmt: skip
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
