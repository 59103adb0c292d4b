"""Validation curves read from a run store: per site, per region, over model rounds.

A curve maps ``model_round -> Summary`` (mean, population std, number of validation
cases) of one metric at one site. Region ``mean`` is the stored ``mean`` row when a site
wrote one, else the average of the ET/TC/WT means; its std is then the average of the
region stds (an upper bound of the true std of the average, which needs the per-case
covariance that never leaves a site).
"""

from __future__ import annotations

import math

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
    """Summary of the union of several sites' cases from their summaries (population std)."""
    parts = [p for p in parts if p.n > 0 and not math.isnan(p.mean)]
    n = sum(p.n for p in parts)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0)
    mean = sum(p.n * p.mean for p in parts) / n
    var = sum(p.n * (p.std**2 + (p.mean - mean) ** 2) for p in parts) / n
    return Summary(float(mean), float(math.sqrt(max(var, 0.0))), n)


def federation_curve(curves: Curves, sites: list[str] | None = None) -> dict[int, Summary]:
    """Pooled curve over ``sites`` (default all), for model rounds every such site reported."""
    sites = sorted(curves) if sites is None else sites
    if not sites:
        return {}
    common = set.intersection(*(set(curves.get(s, {})) for s in sites))
    return {m: pooled([curves[s][m] for s in sites]) for m in sorted(common)}


def ci95(s: Summary) -> tuple[float, float]:
    """Normal-approximation 95% confidence interval of the mean: mean +- 1.96 std/sqrt(n)."""
    if s.n <= 0:
        return (float("nan"), float("nan"))
    half = 1.96 * s.std / math.sqrt(s.n)
    return (s.mean - half, s.mean + half)


def _sorted(curves: Curves) -> Curves:
    return {s: dict(sorted(c.items())) for s, c in sorted(curves.items())}
