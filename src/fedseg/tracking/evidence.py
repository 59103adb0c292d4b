"""The statistics behind the alarms and contributions: what each site's local models do on
the other sites' cases (away), on its own cases (home), its training loss against the
others', and its own validation score against the others' (below), with standard errors
that respect repeated measures.

Conventions (read with ``tracking.store``'s cross-site rows and ``tracking.cross_matrix``):

- **The case is the unit, never the round.** Every round re-measures the same validation
  cases, so the rounds of a window are collapsed per case first (``cross_matrix.cross_cells``:
  mean of the per-round means, sd bounded by the mean of the round sds, ``n`` the
  evaluator's cases). Repeating a round's rows changes no estimate, SE or p-value.
- **Away effect** ``a_i`` of site i in a region: the case-weighted mean, over the evaluators
  ``j != i``, of the collapsed paired difference ``Dice(local model of i) - Dice(global)``
  on j's cases, over the last ``window`` local-model rounds of i with away evidence. Its
  variance has three parts (``Estimate``): the cases (``sum w_j^2 s_j^2 / (n_j - 1)``,
  ``w_j = n_j / sum n``), the evaluators (the DerSimonian-Laird between-evaluator variance
  ``tau^2`` of i's cells, ``sum w_j^2 tau^2``: a column of wrong labels or a lying evaluator
  widens it) and the local models (the sample variance over rounds of the per-round row
  effect, divided by the rounds: each round draws a new local model). By default
  (``Between``: ``site``) they are the site's own, floored by the federation's median (a
  lucky small estimate from 2-3 values) and replaced by it where they cannot be
  estimated; with ``federation`` the evaluator and model parts are the ones pooled over the
  other sites, what a site like them shows under the away test's null.
- **First models**: local models of rounds before ``first_model`` can be left out (those
  of round 1 start from a near-random global model and swing every site's effect).
- **Centred**: every local model is a little worse than the average of all of them (the
  curvature of the loss), so what singles out a site is its effect beyond the
  federation's typical one. For the away effect the comparison is made on the same
  cases (``centred_away``): per evaluator, the site's cell minus the median of the other
  models' cells at that evaluator, then pooled over evaluators like ``a_i``, with the
  median's sampling variance (``pi/2 * mean / K``) in each cell's. An evaluator whose
  cases swing every model's effect (benchmark seed 7: an evaluator-level ET spread of
  0.24-0.39 Dice for every site) no longer widens every interval. Home gains (one
  evaluator: the site) and sites that share no evaluator with another model fall back to
  ``c_i = a_i - median_{k != i} a_k`` with the median's variance
  (``pi/2 * mean(SE_k^2) / K``).
- **Home gain** ``h_i``: the site's own fresh local model against the model it started
  from, on its own cases (no model moves; absent when the site has too few cases),
  collapsed and with SE the same way, and centred the same way: early in a run every
  site's local model gains on its own data.
- **Loss ratio**: the site's mean training loss (``site_rounds.train_loss``) over the
  rounds of its window, divided by the median of the other sites' means over those rounds.
- **Below**: the site's own validation score of the global model, rounds collapsed per
  case, against the other sites' pooled cases, plus the spread of the other sites' means
  (a site is compared with what another site typically gets, not with the pooled mean's
  precision): a t statistic with Welch-Satterthwaite degrees of freedom.

Plain functions on the store's rows; ``site_evidence`` reads a store.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from fedseg.data.labels import REGIONS
from fedseg.model.summary import Summary
from fedseg.plan import Between
from fedseg.run_folder import SiteRoundStatus
from fedseg.tracking.cross_matrix import CrossCell, cross_cells
from fedseg.tracking.store import CROSS_DICE_DIFF, CrossRow, RunStore, SiteRound

#: the regions the away test runs in (a multiplicity correction over them); ``mean`` is shown
TESTED_REGIONS: tuple[str, ...] = REGIONS
ALL_GROUPS: tuple[str, ...] = (*REGIONS, "mean")


@dataclass(frozen=True)
class Estimate:
    """A case-weighted effect with its standard error and what it rests on: ``var_cases``,
    ``var_evaluators`` and ``var_models`` are the three parts of ``se**2``; ``n_cases`` the
    validation cases behind it (each evaluator's cases once), ``evaluators`` whose cases,
    ``model_rounds`` the rounds of the local models, ``round_effects`` the per-round effect."""

    value: float
    se: float
    n_cases: int
    evaluators: tuple[str, ...]
    model_rounds: tuple[int, ...]
    var_cases: float
    var_evaluators: float
    var_models: float
    round_effects: tuple[float, ...] = ()


@dataclass(frozen=True)
class SiteEvidence:
    """One site's evidence in one region after a check. ``away``/``home`` raw estimates
    (None: no evidence), ``centred``/``centred_se`` the away effect beyond the other sites'
    median ``away_reference``; ``home_centred``/``home_se`` likewise; ``loss_ratio`` its
    training loss over the others' median (None: no losses)."""

    site: str
    region: str
    away: Estimate | None
    centred: float | None
    centred_se: float | None
    away_reference: float | None
    home: Estimate | None
    home_centred: float | None
    home_se: float | None
    loss_ratio: float | None


@dataclass(frozen=True)
class BelowTest:
    """The site's own score (rounds collapsed per case) against the other sites': ``gap`` =
    site - others (metric units), ``t``/``df``/``p`` one-sided (site lower), ``n_cases``
    the site's cases, ``n_others`` the others' cases, ``models`` the model rounds used."""

    gap: float
    t: float
    df: float
    p: float
    n_cases: int
    n_others: int
    models: tuple[int, ...]


def p_lower(z: float) -> float:
    """One-sided p of a standard normal statistic (small: the effect is below its margin)."""
    return float(stats.norm.cdf(z)) if math.isfinite(z) else (0.0 if z < 0 else 1.0)


def with_mean_rows(rows: Iterable[CrossRow]) -> list[CrossRow]:
    """``rows`` plus a ``mean`` row per (model, evaluator, metric) that has ET, TC and WT
    but no stored ``mean`` (mean of the means, mean of the sds, smallest ``n``: the rule
    of ``curves``)."""
    rows = list(rows)
    have = {
        (r.model_site, r.model_round, r.eval_site, r.metric) for r in rows if r.region == "mean"
    }
    parts: dict[tuple, dict[str, CrossRow]] = defaultdict(dict)
    for r in rows:
        if r.region in REGIONS:
            parts[(r.model_site, r.model_round, r.eval_site, r.metric)][r.region] = r
    extra = []
    for key, regs in parts.items():
        if key in have or len(regs) < len(REGIONS):
            continue
        first = next(iter(regs.values()))
        extra.append(CrossRow(
            first.round, first.model_site, first.model_round, first.eval_site,
            first.reference_round, "mean", first.metric,
            Summary(float(np.mean([regs[g].summary.mean for g in REGIONS])),
                    float(np.mean([regs[g].summary.std for g in REGIONS])),
                    min(regs[g].summary.n for g in REGIONS)),
        ))  # fmt: skip
    return rows + extra


def case_variance(sd: float, n: int) -> float:
    """Variance of a mean over ``n`` cases with population sd ``sd``."""
    return float(sd) ** 2 / max(n - 1, 1)


def heterogeneity(means: np.ndarray, variances: np.ndarray) -> tuple[float, int, float]:
    """``(Q, df, C)`` of DerSimonian-Laird's moment estimator over ``means`` with within
    variances ``variances``: tau^2 = max(0, (Q - df) / C). Sums of them over groups give the
    pooled tau^2 of groups assumed to share one between-study variance."""
    w = 1.0 / np.maximum(variances, 1e-8)
    ybar = float(np.sum(w * means) / np.sum(w))
    q = float(np.sum(w * (means - ybar) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    return q, int(means.size) - 1, c


def tau2_of(q: float, df: int, c: float) -> float:
    """DerSimonian-Laird's tau^2 from the moments of ``heterogeneity`` (summed or not)."""
    return max(0.0, (q - df) / c) if c > 0 else 0.0


def dersimonian_laird(means: np.ndarray, variances: np.ndarray) -> float | None:
    """Between-study variance tau^2 of ``means`` with within variances ``variances``
    (DerSimonian-Laird); None with fewer than 2 values."""
    if means.size < 2:
        return None
    return tau2_of(*heterogeneity(means, variances))


@dataclass(frozen=True)
class _Parts:
    """An estimate before the federation's floors are applied."""

    value: float
    var_cases: float
    moments: tuple[float, int, float] | None  # heterogeneity(): (Q, df, C); None: 1 cell
    weights2: float  # sum w_j^2
    round_var: float | None
    rounds: int
    n_cases: int
    evaluators: tuple[str, ...]
    model_rounds: tuple[int, ...]
    round_effects: tuple[float, ...]

    @property
    def tau2(self) -> float | None:
        """The site's own DerSimonian-Laird tau^2 between its cells (None: 1 cell)."""
        return None if self.moments is None else tau2_of(*self.moments)


def _pool(means: list[float], variances: list[float], n: list[int], evaluators: list[str],
          per_round: dict[int, list[tuple[int, float]]]) -> _Parts:  # fmt: skip
    """One site's estimate from its evaluator cells (``means`` with their case
    ``variances``, ``n`` cases each) and its per-round values (model round -> ``(n, value)``
    per evaluator): case-weighted mean, its case variance, DerSimonian-Laird between the
    cells, and the variance of the per-round case-weighted means over rounds."""
    n_arr = np.array(n, dtype=np.float64)
    w = n_arr / n_arr.sum()
    m_arr, v_arr = np.array(means), np.array(variances)
    effects = tuple(
        float(np.average([m for _, m in vals], weights=[k for k, _ in vals]))
        for _, vals in sorted(per_round.items())
    )
    return _Parts(
        value=float(np.sum(w * m_arr)),
        var_cases=float(np.sum(w**2 * v_arr)),
        moments=heterogeneity(m_arr, v_arr) if m_arr.size >= 2 else None,
        weights2=float(np.sum(w**2)),
        round_var=float(np.var(effects, ddof=1)) if len(effects) >= 2 else None,
        rounds=len(effects),
        n_cases=int(n_arr.sum()),
        evaluators=tuple(evaluators),
        model_rounds=tuple(sorted(per_round)),
        round_effects=effects,
    )


def _parts(cells: list[CrossCell], rows: list[CrossRow]) -> _Parts | None:
    """The collapsed estimate of one site's cells (``rows``: the same evidence per round)."""
    cells = [c for c in cells if c.n > 0 and math.isfinite(c.mean)]
    if not cells:
        return None
    per_round: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r.summary.n > 0 and math.isfinite(r.summary.mean):
            per_round[r.model_round].append((r.summary.n, r.summary.mean))
    return _pool([c.mean for c in cells], [case_variance(c.sd, c.n) for c in cells],
                 [c.n for c in cells], [c.eval_site for c in cells], per_round)  # fmt: skip


def _others_tau2(parts: dict[str, _Parts], site: str) -> float | None:
    """tau^2 pooled over the other sites' cells (their Q, df and C summed: one
    between-evaluator variance shared by the sites); None: no other site has 2 evaluators."""
    moments = [p.moments for s, p in parts.items() if s != site and p.moments is not None]
    if not moments:
        return None
    q, df, c = (sum(m[i] for m in moments) for i in range(3))
    return tau2_of(q, int(df), c)


def _others_round_var(parts: dict[str, _Parts], site: str) -> float | None:
    """The variance over rounds of the per-round effect pooled over the other sites (their
    sample variances weighted by degrees of freedom, ``rounds - 1``); None: no other site
    has 2 rounds."""
    pairs = [(p.rounds - 1, p.round_var) for s, p in parts.items()
             if s != site and p.round_var is not None and p.rounds >= 2]  # fmt: skip
    if not pairs:
        return None
    return sum(d * v for d, v in pairs) / sum(d for d, _ in pairs)


def _floored(parts: dict[str, _Parts], between: Between = "site") -> dict[str, Estimate]:
    """Estimates with their between-evaluator and model-draw variances (``Between``).

    ``site``: the site's own, with the federation's median of each part as its floor (and
    as the value where a site's own part cannot be estimated). ``federation``: the ones
    pooled over the other sites, the spread a site like them would show under the away
    test's null. A site's own parts rest on 2-3 evaluators and 3 rounds by default (1-2 degrees of
    freedom each): a bad model that hurts one evaluator much more than another (benchmark
    seed 21, swapped) or that breaks the enhancing tumour in every other round (seeds 41
    and 57, eroded: round effects -0.47, -0.01, -0.68) widens its own interval."""
    taus = [p.tau2 for p in parts.values() if p.tau2 is not None]
    rvars = [p.round_var for p in parts.values() if p.round_var is not None]
    tau_floor = float(np.median(taus)) if taus else 0.0
    rvar_floor = float(np.median(rvars)) if rvars else 0.0
    out = {}
    for site, p in parts.items():
        if between == "federation":
            pooled_tau2, pooled_rvar = _others_tau2(parts, site), _others_round_var(parts, site)
            tau2 = tau_floor if pooled_tau2 is None else pooled_tau2
            round_var = rvar_floor if pooled_rvar is None else pooled_rvar
        else:
            tau2 = max(p.tau2 if p.tau2 is not None else 0.0, tau_floor)
            round_var = max(p.round_var if p.round_var is not None else 0.0, rvar_floor)
        var_e = p.weights2 * tau2
        var_m = round_var / max(p.rounds, 1)
        se = math.sqrt(p.var_cases + var_e + var_m)
        out[site] = Estimate(p.value, se, p.n_cases, p.evaluators, p.model_rounds,
                             p.var_cases, var_e, var_m, p.round_effects)  # fmt: skip
    return out


def last_rounds(rounds: Iterable[int], window: int) -> set[int]:
    """The last ``window`` distinct values of ``rounds``."""
    return set(sorted(set(rounds))[-window:])


def _windowed(rows: list[CrossRow], window: int, *, home: bool) -> dict[str, list[CrossRow]]:
    """Per model site (sorted), its away (or home) rows of its last ``window`` local-model
    rounds with such evidence."""
    by_site: dict[str, list[CrossRow]] = defaultdict(list)
    for r in rows:
        if r.home == home:
            by_site[r.model_site].append(r)
    out = {}
    for site, mine in sorted(by_site.items()):
        keep = last_rounds((r.model_round for r in mine), window)
        out[site] = [r for r in mine if r.model_round in keep]
    return out


def _estimates(rows: list[CrossRow], window: int, *, home: bool,
               between: Between = "site") -> dict[str, Estimate]:  # fmt: skip
    """Per model site, its away (or home) estimate over its last ``window`` local-model
    rounds with such evidence (``rows``: one region's dice_diff rows)."""
    parts: dict[str, _Parts] = {}
    for site, mine in _windowed(rows, window, home=home).items():
        region = mine[0].region
        p = _parts(cross_cells(mine, region=region, metric=CROSS_DICE_DIFF), mine)
        if p is not None:
            parts[site] = p
    return _floored(parts, between)


def centred(est: dict[str, Estimate], site: str) -> tuple[float, float, float | None]:
    """``(c, se, reference)``: the site's estimate beyond the median of the other sites'
    (reference None and no centring when no other site has one)."""
    own = est[site]
    others = [e for s, e in est.items() if s != site]
    if not others:
        return own.value, own.se, None
    ref = float(np.median([e.value for e in others]))
    var_ref = math.pi / 2 * float(np.mean([e.se**2 for e in others])) / len(others)
    return own.value - ref, math.sqrt(own.se**2 + var_ref), ref


def centred_away(rows: list[CrossRow], window: int, est: dict[str, Estimate],
                 between: Between = "site") -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """Per model site ``i``: ``(c, se, reference)``, its away effect beyond the other
    sites' local models **on the same evaluator's cases** (``rows``: one region's away
    dice_diff rows; ``est``: the raw estimates, for the reference ``a_i - c``).

    Cell by cell (evaluator ``j``, rounds collapsed): ``x_ij = m_ij - median_k m_kj`` over
    the other models ``j`` validated; ``c_i`` is their case-weighted mean. An evaluator
    whose cases move every model's effect (cases without enhancing tumour, say) moves the
    reference with it, so it neither hides nor fakes a site; the between-evaluator
    variance (DerSimonian-Laird on ``x_ij``) is what is left. The model-draw part is the
    variance over rounds of the same contrast per round. Both are floored by the
    federation's median, as in ``_floored``. Sites with no evaluator shared with another
    model are left out (``centred`` applies)."""
    cells: dict[str, dict[str, CrossCell]] = {}
    per_round: dict[str, dict[tuple[str, int], tuple[int, float]]] = {}
    measured = [r for r in rows if r.summary.n > 0 and math.isfinite(r.summary.mean)]
    for site, rs in _windowed(measured, window, home=False).items():
        region = rs[0].region
        cells[site] = {c.eval_site: c for c in cross_cells(rs, region=region,
                                                            metric=CROSS_DICE_DIFF)}  # fmt: skip
        per_round[site] = {(r.eval_site, r.model_round): (r.summary.n, r.summary.mean)
                           for r in rs}  # fmt: skip
    parts: dict[str, _Parts] = {}
    for site, own in cells.items():
        xs, vs, ns, used = [], [], [], []
        for j, cell in own.items():
            others = [c[j] for k, c in cells.items() if k != site and j in c]
            if not others:
                continue
            ref_var = math.pi / 2 * float(np.mean([case_variance(o.sd, o.n) for o in others]))
            xs.append(cell.mean - float(np.median([o.mean for o in others])))
            vs.append(case_variance(cell.sd, cell.n) + ref_var / len(others))
            ns.append(cell.n)
            used.append(j)
        if not xs:
            continue
        by_round: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for (j, r), (n, m) in per_round[site].items():
            others_r = [pr[(j, r)][1] for k, pr in per_round.items()
                        if k != site and (j, r) in pr]  # fmt: skip
            if others_r:
                by_round[r].append((n, m - float(np.median(others_r))))
        parts[site] = _pool(xs, vs, ns, used, by_round)
    out = {}
    for site, e in _floored(parts, between).items():
        raw = est.get(site)
        out[site] = (e.value, e.se, (raw.value - e.value) if raw is not None else float("nan"))
    return out


def loss_ratios(
    site_rounds: list[SiteRound], rounds_of: dict[str, set[int]], window: int, upto: int
) -> dict[str, float]:
    """Per site: mean training loss over its rounds (``rounds_of[site]``, else its last
    ``window`` rounds with a loss, ``<= upto``) over the median of the other sites' means
    over the same rounds."""
    loss: dict[str, dict[int, float]] = defaultdict(dict)
    for r in site_rounds:
        if (r.status == SiteRoundStatus.OK and r.train_loss is not None and r.round <= upto
                and math.isfinite(r.train_loss)):  # fmt: skip
            loss[r.site][r.round] = float(r.train_loss)
    out = {}
    for site, mine in loss.items():
        rounds = rounds_of.get(site) or last_rounds(mine, window)
        rounds = {r for r in rounds if r in mine} or last_rounds(mine, window)
        others = [
            float(np.mean([v for r, v in c.items() if r in rounds]))
            for s, c in loss.items()
            if s != site and any(r in rounds for r in c)
        ]
        ref = float(np.median(others)) if others else float("nan")
        if others and ref > 0:
            out[site] = float(np.mean([mine[r] for r in rounds])) / ref
    return out


def evidence_from_rows(
    rows: list[CrossRow],
    site_rounds: list[SiteRound],
    *,
    window: int,
    upto: int,
    regions: tuple[str, ...] = ALL_GROUPS,
    between: Between = "site",
    first_model: int = 1,
) -> dict[tuple[str, str], SiteEvidence]:
    """``(site, region) -> SiteEvidence`` from cross rows made in rounds ``<= upto`` about
    local models of rounds ``>= first_model``, and the site rounds (training losses)
    ``<= upto``; ``between``: whose variance parts the away intervals use (``Between``)."""
    rows = with_mean_rows(r for r in rows if r.round <= upto and r.metric == CROSS_DICE_DIFF
                          and r.model_round >= first_model)  # fmt: skip
    by_region: dict[str, list[CrossRow]] = defaultdict(list)
    for r in rows:
        by_region[r.region].append(r)
    out: dict[tuple[str, str], SiteEvidence] = {}
    away = {g: _estimates(by_region[g], window, home=False, between=between) for g in regions}
    home = {g: _estimates(by_region[g], window, home=True) for g in regions}
    windows = {s: set(e.model_rounds) for g in regions for s, e in away[g].items()}
    ratios = loss_ratios(site_rounds, windows, window, upto)
    sites = sorted({s for g in regions for s in (*away[g], *home[g])})
    within = {g: centred_away(by_region[g], window, away[g], between) for g in regions}
    for g in regions:
        for site in sites:
            a = away[g].get(site)
            c, cse, ref = None, None, None
            if a is not None:
                c, cse, ref = within[g].get(site) or centred(away[g], site)
            h = home[g].get(site)
            hc, hse, _ = centred(home[g], site) if h is not None else (None, None, None)
            out[(site, g)] = SiteEvidence(site, g, a, c, cse, ref, h, hc, hse, ratios.get(site))
    return out


def site_evidence(
    store: RunStore,
    upto_round: int,
    window: int,
    regions: tuple[str, ...] = ALL_GROUPS,
    between: Between = "site",
    first_model: int = 1,
) -> dict[tuple[str, str], SiteEvidence]:
    """``evidence_from_rows`` of the store after round ``upto_round`` ({} without cross rows)."""
    rows = store.cross(metric=CROSS_DICE_DIFF, upto_round=upto_round)
    if not rows:
        return {}
    return evidence_from_rows(rows, store.site_rounds(), window=window, upto=upto_round,
                              regions=regions, between=between,
                              first_model=first_model)  # fmt: skip


def has_away_evidence(store: RunStore, upto_round: int | None = None) -> bool:
    """Whether any site's local model was validated at another site (rounds ``<= upto``)."""
    return any(not r.home for r in store.cross(metric=CROSS_DICE_DIFF, upto_round=upto_round))


def collapse_rounds(curve: dict[int, Summary], rounds: Iterable[int]) -> Summary | None:
    """One site's summaries of the same cases over ``rounds``, collapsed: mean of means,
    the mean of the sds (a bound of the per-case sd of the round-averaged values), the
    cases ``n`` (never the number of rounds)."""
    vals = [
        curve[r] for r in rounds if r in curve and curve[r].n > 0 and math.isfinite(curve[r].mean)
    ]
    if not vals:
        return None
    return Summary(float(np.mean([v.mean for v in vals])),
                   float(np.mean([v.std for v in vals])), max(v.n for v in vals))  # fmt: skip


def below_test(site: Summary, others: list[Summary], models: tuple[int, ...]) -> BelowTest:
    """One-sided test that ``site`` (rounds collapsed) is below the other sites' pooled
    cases: variance = the site's case variance + the pooled others' case variance + the
    spread of the others' site means; t with Welch-Satterthwaite degrees of freedom."""
    others = [o for o in others if o.n > 0]
    if site.n <= 0 or not others:
        return BelowTest(float("nan"), float("nan"), float("nan"), 1.0, site.n, 0, models)
    n_o = np.array([o.n for o in others], dtype=np.float64)
    m_o = np.array([o.mean for o in others])
    s_o = np.array([o.std for o in others])
    big_n = float(n_o.sum())
    pooled = float(np.sum(n_o * m_o) / big_n)
    within_o = float(np.sum(n_o * (s_o**2 + (m_o - pooled) ** 2)) / big_n)
    parts = [(case_variance(site.std, site.n), max(site.n - 1, 1)),
             (within_o / max(big_n - 1, 1), max(big_n - 1, 1))]  # fmt: skip
    if len(others) >= 2:
        parts.append((float(np.var(m_o, ddof=1)), len(others) - 1))
    var = sum(v for v, _ in parts)
    gap = site.mean - pooled
    if var <= 0:
        t = -math.inf if gap < 0 else (math.inf if gap > 0 else 0.0)
        return BelowTest(gap, t, math.inf, 0.0 if gap < 0 else 1.0, site.n, int(big_n), models)
    df = var**2 / sum(v**2 / d for v, d in parts if v > 0)
    t = gap / math.sqrt(var)
    return BelowTest(gap, t, df, float(stats.t.cdf(t, df)), site.n, int(big_n), models)
