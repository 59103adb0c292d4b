"""Validation curves read from a run store, and the one rule that scores a model round.

A curve maps ``model_round -> Summary`` (mean, population std, number of validation
cases) of one metric at one site. Region ``mean`` is the stored ``mean`` row when a site
wrote one, else the average of the ET/TC/WT means; its std is then the average of the
region stds (an upper bound of the true std of the average, which needs the per-case
covariance that never leaves a site).

The score of a model round (``federation_curve``; ``round_scores`` reads a store) is the
same everywhere a round is ranked or plotted: ``fedseg select``, the coordinator's
``best.pt``, ``fedseg compare``, status, report and contributions:

1. a site's value with no cases (``n = 0``) or a non-finite mean is no validation: absent;
2. the population is every site (of those asked, default all) that validated any model
   round; a model round is a candidate only when every site of the population validated
   it, so every score is measured on the same sites' cases (a site that validates late
   makes the earlier rounds ineligible);
3. the score is the case-weighted mean over the population, ``sum n_s m_s / sum n_s``,
   with the pooled population std of the union of the sites' cases and ``n = sum n_s``;
4. the best round (``selection.best_round``) has the highest score, the earliest on ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedseg.data.labels import REGIONS
from fedseg.model.summary import Summary
from fedseg.tracking.store import RunStore, ValidationRow

#: Site -> model_round -> Summary.
Curves = dict[str, dict[int, Summary]]

ALL_REGIONS: tuple[str, ...] = (*REGIONS, "mean")


def curves_from_rows(rows: list[ValidationRow], region: str, metric: str = "dice") -> Curves:
    """Per-site curves of ``metric`` in ``region`` from validation rows (any order)."""
    direct: Curves = {}
    parts: dict[str, dict[int, dict[str, Summary]]] = {}
    for r in rows:
        if r.metric != metric:
            continue
        s = Summary(r.mean, r.std, r.n)
        if r.region == region:
            direct.setdefault(r.site, {})[r.model_round] = s
        elif region == "mean" and r.region in REGIONS:
            parts.setdefault(r.site, {}).setdefault(r.model_round, {})[r.region] = s
    if region != "mean":
        return _sorted(direct)
    out: Curves = {}
    for site in sorted(set(direct) | set(parts)):
        by_round: dict[int, Summary] = {}
        for mr, regs in parts.get(site, {}).items():
            if len(regs) == len(REGIONS):
                by_round[mr] = Summary(
                    float(np.mean([regs[g].mean for g in REGIONS])),
                    float(np.mean([regs[g].std for g in REGIONS])),
                    min(regs[g].n for g in REGIONS),
                )
        by_round.update(direct.get(site, {}))  # a stored ``mean`` row wins
        out[site] = by_round
    return _sorted(out)


def site_curves(
    store: RunStore, region: str = "mean", metric: str = "dice", *, upto: int | None = None
) -> Curves:
    """Per-site curves from ``store``, keeping model rounds ``<= upto`` when given."""
    curves = curves_from_rows(store.validation(metric=metric), region, metric)
    if upto is not None:
        curves = {s: {m: v for m, v in c.items() if m <= upto} for s, c in curves.items()}
    return {s: c for s, c in curves.items() if c}


def pooled(parts: list[Summary]) -> Summary:
    """Summary of the union of several sites' cases from their summaries (population std);
    parts without cases or with a non-finite mean are left out."""
    parts = [p for p in parts if _counts(p)]
    n = sum(p.n for p in parts)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0)
    mean = sum(p.n * p.mean for p in parts) / n
    var = sum(p.n * (p.std**2 + (p.mean - mean) ** 2) for p in parts) / n
    return Summary(float(mean), float(math.sqrt(max(var, 0.0))), n)


def federation_curve(curves: Curves, sites: Sequence[str] | None = None) -> dict[int, Summary]:
    """The score of every candidate model round by the rule of this module's docstring:
    ``model_round -> Summary`` (case-weighted mean, pooled std, cases) over ``sites``
    (default: all sites of ``curves``), in round order."""
    valid = {
        s: {m: v for m, v in curves.get(s, {}).items() if _counts(v)}
        for s in (sorted(curves) if sites is None else sites)
    }
    population = [s for s, c in valid.items() if c]
    if not population:
        return {}
    common = set.intersection(*(set(valid[s]) for s in population))
    return {m: pooled([valid[s][m] for s in population]) for m in sorted(common)}


def round_scores(
    store: RunStore,
    region: str = "mean",
    metric: str = "dice",
    *,
    sites: Sequence[str] | None = None,
) -> dict[int, Summary]:
    """``federation_curve`` of ``metric`` in ``region`` from ``store``'s validation rows."""
    return federation_curve(
        curves_from_rows(store.validation(metric=metric), region, metric), sites
    )


def ci95(s: Summary) -> tuple[float, float]:
    """Normal-approximation 95% confidence interval of the mean: mean +- 1.96 std/sqrt(n)."""
    if s.n <= 0:
        return (float("nan"), float("nan"))
    half = 1.96 * s.std / math.sqrt(s.n)
    return (s.mean - half, s.mean + half)


def _counts(s: Summary) -> bool:
    """A site's value is a validation: it has cases and a finite mean."""
    return s.n > 0 and math.isfinite(s.mean)


def _sorted(curves: Curves) -> Curves:
    return {s: dict(sorted(c.items())) for s, c in sorted(curves.items())}
