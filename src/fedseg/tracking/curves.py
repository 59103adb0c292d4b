"""Validation curves read from a run store, and the one rule that scores a model round.

A curve maps ``model_round -> Summary`` (mean, population std, number of validation
cases) of one metric at one site, in one group: the validation rows' ``region`` column,
an ET/TC/WT region for a segmentation run and a modality (t1, t1ce, t2, flair) for a
synthesis run (``run_folder.Task``, the store's meta ``task``). ``ScoreSpec`` names a
task's groups and its default metric: segmentation Dice over ET/TC/WT, synthesis
brain-masked SSIM over the modalities (``score_spec``; ``store_score_spec`` reads the
store's task). Every function below that takes a store and no metric uses its task's.

Group ``mean`` is the stored ``mean`` row when a site wrote one, else the average over
the groups the site validates (those of the spec it has rows of, for that metric, in any
model round), present in a model round only when the site validated every one of them
there: a segmentation site validates all three regions, a synthesis site the modalities
it has (a site without FLAIR is scored on t1, t1ce, t2). Its std is the average of the
group stds (an upper bound of the true std of the average, which needs the per-case
covariance that never leaves a site), its ``n`` the smallest group's.

The score of a model round (``federation_curve``; ``round_scores`` reads a store) is the
same everywhere a round is ranked or plotted: ``fedseg select``, the coordinator's
``best.pt``, ``fedseg compare``, status, report and contributions:

1. a site's value with no cases (``n = 0``) or a non-finite mean is no validation: absent;
2. the population is every site (of those asked, default all) that validated any model
   round; a model round is a candidate only when every site of the population that was
   expected to validate it did, so a failed, timed-out or rejected site, or one that
   validates late, makes the rounds it missed ineligible. A site is *not expected* to
   validate model m when the round that validated it (m + 1) gave it no task (its
   ``site_rounds`` row is ``not asked``: partial participation with ``validators:
   trainers`` or ``every:K``, or busy after a cut) or cut it after quorum (plan
   ``straggler``: ``run_folder.CUT_AFTER_QUORUM``): the coordinator chose not to ask or
   not to wait (``excused_sites``). Without such rows every site is expected every round,
   and every score is measured on the same sites' cases;
3. the score is the case-weighted mean over the population sites that validated the
   round, ``sum n_s m_s / sum n_s``, with the pooled population std of the union of the
   sites' cases and ``n = sum n_s``;
4. the best round (``selection.best_round``) has the highest score, the earliest on ties.

Rule 2's "not expected" (issue 19) is the one choice between making most rounds of a
partial plan ineligible (``every:K``: only one round in K would be a candidate; ``trainers``
with fewer trainers than sites: none but the final validation) and comparing rounds
scored on different sites: it takes the second, as the FeTS challenge scores each round on
the sites that validated it; ``validators: all`` keeps every score on the same sites.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedseg.data.cases import MODALITIES
from fedseg.data.labels import REGIONS
from fedseg.model.summary import Summary
from fedseg.run_folder import CUT_AFTER_QUORUM, SiteRoundStatus, Task
from fedseg.tracking.store import RunStore, ValidationRow

#: Site -> model_round -> Summary.
Curves = dict[str, dict[int, Summary]]
#: model_round -> the sites not expected to validate it (rule 2 of the module doc).
Excused = Mapping[int, Collection[str]]

ALL_REGIONS: tuple[str, ...] = (*REGIONS, "mean")


@dataclass(frozen=True)
class ScoreSpec:
    """What a task's validation rows hold and what scores a model round: the mean over
    ``groups`` (the rows' ``region`` values) of ``metric`` (higher is better). ``label``
    names the metric and ``group_word`` a group for people (tables, figures)."""

    task: Task
    groups: tuple[str, ...]
    metric: str
    label: str
    group_word: str

    @property
    def all_groups(self) -> tuple[str, ...]:
        """The groups and ``mean``: what status and report show."""
        return (*self.groups, "mean")

    def metric_label(self, metric: str | None = None) -> str:
        """``Dice``, ``SSIM``, ``PSNR``, ...: a metric's name for people."""
        m = metric or self.metric
        return METRIC_LABELS.get(m, m)


#: metric names for people
METRIC_LABELS = {"dice": "Dice", "hd95": "HD95", "ssim": "SSIM", "psnr": "PSNR", "mae": "MAE"}

SEGMENTATION_SCORE = ScoreSpec(Task.SEGMENTATION, REGIONS, "dice", "Dice", "region")
#: brain-masked SSIM (``synth.validate``); a site is scored on the modalities it has
SYNTHESIS_SCORE = ScoreSpec(Task.SYNTHESIS, MODALITIES, "ssim", "SSIM", "modality")


def score_spec(task: Task | str) -> ScoreSpec:
    """The ``ScoreSpec`` of a run's task."""
    return SYNTHESIS_SCORE if Task(task) == Task.SYNTHESIS else SEGMENTATION_SCORE


def store_score_spec(store: RunStore) -> ScoreSpec:
    """The ``ScoreSpec`` of the run ``store`` belongs to (meta ``task``; a run that never
    recorded one is a segmentation run)."""
    return score_spec(store.meta.task())


def curves_from_rows(
    rows: list[ValidationRow],
    region: str = "mean",
    metric: str | None = None,
    *,
    spec: ScoreSpec = SEGMENTATION_SCORE,
) -> Curves:
    """Per-site curves of ``metric`` (default: ``spec``'s) in group ``region`` from
    validation rows (any order); ``mean`` by the rule of this module's docstring."""
    metric = metric or spec.metric
    direct: Curves = {}
    parts: dict[str, dict[int, dict[str, Summary]]] = {}
    for r in rows:
        if r.metric != metric:
            continue
        s = Summary(r.mean, r.std, r.n)
        if r.region == region:
            direct.setdefault(r.site, {})[r.model_round] = s
        elif region == "mean" and r.region in spec.groups:
            parts.setdefault(r.site, {}).setdefault(r.model_round, {})[r.region] = s
    if region != "mean":
        return _sorted(direct)
    out: Curves = {}
    for site in sorted(set(direct) | set(parts)):
        by_round: dict[int, Summary] = {}
        own = {g for regs in parts.get(site, {}).values() for g in regs}  # groups it validates
        groups = [g for g in spec.groups if g in own]
        for mr, regs in parts.get(site, {}).items():
            if all(g in regs for g in groups):
                by_round[mr] = Summary(
                    float(np.mean([regs[g].mean for g in groups])),
                    float(np.mean([regs[g].std for g in groups])),
                    min(regs[g].n for g in groups),
                )
        by_round.update(direct.get(site, {}))  # a stored ``mean`` row wins
        out[site] = by_round
    return _sorted(out)


def site_curves(
    store: RunStore,
    region: str = "mean",
    metric: str | None = None,
    *,
    upto: int | None = None,
) -> Curves:
    """Per-site curves from ``store`` (``metric``: default its task's), keeping model
    rounds ``<= upto`` when given."""
    spec = store_score_spec(store)
    metric = metric or spec.metric
    curves = curves_from_rows(store.validation(metric=metric), region, metric, spec=spec)
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


def excused_sites(store: RunStore) -> dict[int, frozenset[str]]:
    """``model_round -> sites`` not expected to validate it (rule 2 of the module doc):
    round ``m + 1`` recorded them ``not asked`` or cut after quorum."""
    out: dict[int, set[str]] = {}
    for r in store.site_rounds():
        cut = r.status == SiteRoundStatus.TIMEOUT and CUT_AFTER_QUORUM in (r.extra or {})
        if r.status == SiteRoundStatus.NOT_ASKED or cut:
            out.setdefault(r.round - 1, set()).add(r.site)
    return {m: frozenset(s) for m, s in out.items()}


def federation_curve(
    curves: Curves, sites: Sequence[str] | None = None, excused: Excused | None = None
) -> dict[int, Summary]:
    """The score of every candidate model round by the rule of this module's docstring:
    ``model_round -> Summary`` (case-weighted mean, pooled std, cases) over ``sites``
    (default: all sites of ``curves``), in round order. ``excused``: per model round, the
    sites not expected to validate it (``excused_sites``; None: every site expected)."""
    valid = {
        s: {m: v for m, v in curves.get(s, {}).items() if _counts(v)}
        for s in (sorted(curves) if sites is None else sites)
    }
    population = [s for s, c in valid.items() if c]
    if not population:
        return {}
    excused = excused or {}
    out = {}
    for m in sorted({m for s in population for m in valid[s]}):
        free = excused.get(m, ())
        if all(m in valid[s] or s in free for s in population):
            out[m] = pooled([valid[s][m] for s in population if m in valid[s]])
    return out


def round_scores(
    store: RunStore,
    region: str = "mean",
    metric: str | None = None,
    *,
    sites: Sequence[str] | None = None,
) -> dict[int, Summary]:
    """``federation_curve`` of ``metric`` (default: the store's task's) in ``region`` from
    ``store``'s validation rows, the sites it did not ask excused: the score of every
    candidate model round."""
    return federation_curve(site_curves(store, region, metric), sites, excused_sites(store))


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
