"""Automatic alarms, each with the evidence it rests on (``run_folder.AlarmEvidence``).

Four kinds (``run_folder.AlarmKind``), checked together by ``check_alarms`` after every
round (the federation calls it; ``fedseg alarms --replay`` replays it on a finished run).
The statistics are in ``tracking.evidence`` (cases are the unit, rounds are collapsed):

- ``labels_disagree`` (needs cross-site evidence, plan ``cross_site``, from at least
  ``labels_min_models`` local-model rounds: fewer cannot estimate the model-draw variance,
  and every false alarm of ``benchmarks/monitoring.py``'s calibration seeds came from
  checks on 1-2 rounds): in some region (ET/TC/WT, Bonferroni over the three), the site's
  local models lose more than ``delta_away`` Dice on the other sites' cases beyond the
  federation's typical loss (one-sided z on the centred away effect, level
  ``labels_alpha / 3``; the interval's between-evaluator and model-draw variances are
  the site's own or, with ``labels_between: federation``, the ones pooled over the other
  sites: ``plan.Between``; local models of rounds before ``evidence_first_model`` are left
  out),
  **and** one of three signs that the labels, not the images, differ, each at level
  ``labels_alpha``:

  - *inside the tumour* (ET or TC): the loss there exceeds the loss on the whole tumour
    (WT) by more than ``delta_inside``. Label errors inside the tumour (swapped or
    scrambled sub-regions, an eroded or shifted enhancing rim) leave the union of the
    labels, WT, nearly intact; another scanner or intensity profile moves the whole
    tumour's boundary first. Measured on the benchmark's 20 calibration seeds after round
    6 (centred away effect ET/TC/WT, medians): another scanner -0.11/-0.14/-0.21, the
    mislabeled kinds -0.06..-0.61 / -0.12..-0.51 / -0.01..+0.07;
  - *home gain*: its own local model gains more than ``delta_home`` on its own cases
    beyond the others' home gain (significantly above 0: the site's few cases);
  - *loss*: its training loss is above ``loss_ratio`` times the others' median (labels
    that disagree with the images are hard to fit: eroded and shifted sites reach 1.5x);

  holding in ``labels_persist`` consecutive checks (rounds that brought away evidence). A
  site whose data is merely harder loses nothing away; a site with another scanner loses
  away, on the whole tumour as much as inside it, and neither gains at home nor trains to
  a high loss: neither fires. A labelling error that changes the whole tumour (edema left
  out) shows in the home or loss signs only.
- ``below_federation``: the site's own validation score, rounds collapsed per case, is
  below the other sites' pooled cases plus the spread of their site means (one-sided t,
  ``p < alpha``), with at least ``min_rounds`` models and a gap of at least ``min_gap``.
  It is an **alarm** only when the run has no cross-site evidence at all (privacy plans,
  older runs, synthesis runs) or when ``labels_disagree`` holds for the site too;
  otherwise an **observation** (``AlarmLevel``): a lower own score of a site whose labels
  the cross-site evidence does not single out is harder or different data, which
  notifies nobody. (Corroboration by a significant away loss alone let the benchmark's
  other-scanner site notify an outlying update.)
- ``stalled``: over the last ``stall_window`` models the others improve while the site
  does not: the gap (site - others) falls with a significant linear trend (one-sided
  ``p < stall_alpha``), by at least ``stall_min_drop`` over the window, and the site's
  own gain over the window is below ``stall_max_gain``, in ``stall_persist`` consecutive
  rounds.
- ``stalled`` and ``update_outlier`` follow ``below_federation``'s rule: alarms without
  cross-site evidence or when it corroborates them, else observations (an update far from
  the others' is what another scanner's data gives too: ``benchmarks/monitoring.py``
  flagged a clean site with 2 validation cases and one more training case that way).
- ``update_outlier``: the site's update distance to the aggregate (``update_distance``;
  ``update_norm`` when absent) is a robust outlier against the other sites of that round:
  ``(x - median(others)) / scale > outlier_z`` where ``scale`` is ``1.4826 * MAD(others)``
  but never below ``outlier_rel_floor * median(others)``: with 2-4 others the MAD alone can
  be near zero, and clean sites' update sizes differ by up to ~1.5x in a real FedAvg run
  (measured on synthetic sites), so by default only an update about twice the others' size
  or more is flagged.

The watched metric and region of ``below_federation`` and ``stalled`` are the plan's
``alarms`` read for the run's task (``AlarmConfig.for_task``, the store's meta ``task``):
a segmentation run's mean Dice, a synthesis run's brain-masked SSIM averaged over the
modalities each site validates (``curves``); ``min_gap`` and the stall thresholds are in
that metric's units.

Each alarm or observation that holds is stored for the round it was checked in (table
``alarms``, with its level and evidence; its ``message`` is the evidence's text). The
notification command runs once per (site, kind) the first time an *alarm* of it is
stored, with ``FEDSEG_ALARM_{RUN,ROUND,SITE,KIND,MESSAGE,LEVEL}`` and
``FEDSEG_ALARM_EVIDENCE`` (the evidence as JSON) in its environment; observations never
notify.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from fedseg.plan import AlarmConfig, read_run_plan
from fedseg.run_folder import (
    AlarmEvidence,
    AlarmKind,
    AlarmLevel,
    RoundStatus,
    SiteRoundStatus,
)
from fedseg.tracking.curves import Curves, site_curves
from fedseg.tracking.evidence import (
    TESTED_REGIONS,
    BelowTest,
    SiteEvidence,
    below_test,
    collapse_rounds,
    evidence_from_rows,
    has_away_evidence,
    p_lower,
)
from fedseg.tracking.store import CROSS_DICE_DIFF, Alarm, CrossRow, RunStore

LABELS = AlarmKind.LABELS_DISAGREE.value
BELOW = AlarmKind.BELOW_FEDERATION.value
STALLED = AlarmKind.STALLED.value
OUTLIER = AlarmKind.UPDATE_OUTLIER.value
KINDS: tuple[str, ...] = tuple(k.value for k in AlarmKind)


def run_alarm_config(run: Path) -> AlarmConfig:
    """The alarm settings of the plan the run folder recorded (defaults for a run without
    a plan: a centralized run)."""
    plan = read_run_plan(run)
    return plan.alarms if plan is not None else AlarmConfig()


def p_text(p: float | None) -> str:
    """A p-value for text: ``p=0.0123``, ``p<1e-4``."""
    if p is None or not math.isfinite(p):
        return "p=-"
    return "p<1e-4" if p < 1e-4 else f"p={p:.3g}"


def _span(rounds) -> str:
    rs = sorted(rounds)
    if not rs:
        return "-"
    return f"{rs[0]}" if len(rs) == 1 else f"{rs[0]}-{rs[-1]}"


@dataclass(frozen=True)
class BelowResult:
    """Outcome of ``below_federation``: models used, gap (site - others, metric units),
    one-sided p, whether it holds, and the test behind it (None: nothing to compare)."""

    n: int
    median_gap: float  # the gap of the rounds-collapsed means (name kept from the old test)
    p: float
    flagged: bool
    test: BelowTest | None = None


@dataclass(frozen=True)
class StallResult:
    """Outcome of ``stalled``: gap slope per round, its p-value, the gains over the window."""

    slope: float
    p: float
    site_gain: float
    others_gain: float
    flagged: bool


@dataclass(frozen=True)
class LabelsResult:
    """Outcome of the ``labels_disagree`` rule for one site at one check: whether it
    holds, the region that decides (the most significant holding one, else the most
    significant away region), the away z and Bonferroni p, the home p and the loss
    ratio, and the region's evidence."""

    holds: bool
    away_significant: bool
    region: str
    z: float
    p: float
    home_p: float | None
    loss_ratio: float | None
    evidence: SiteEvidence
    inside: float | None = None  # region's away effect minus WT's (ET/TC only)
    inside_p: float | None = None  # one-sided p of inside < -delta_inside


def below_federation(curves: Curves, site: str, cfg: AlarmConfig) -> BelowResult:
    """The site's curve against the other sites' on the model rounds where the site and
    another site validated (the last ``window`` of them when set), rounds collapsed per
    case (``evidence.below_test``)."""
    mine = curves.get(site, {})
    rounds = sorted(
        mr for mr, s in mine.items()
        if s.n > 0 and math.isfinite(s.mean)
        and any(o != site and mr in c and c[mr].n > 0 for o, c in curves.items())
    )  # fmt: skip
    if cfg.window is not None:
        rounds = rounds[-cfg.window :]
    own = collapse_rounds(mine, rounds)
    if own is None:
        return BelowResult(0, float("nan"), 1.0, False)
    others = [collapse_rounds(c, rounds) for o, c in sorted(curves.items()) if o != site]
    test = below_test(own, [o for o in others if o is not None], tuple(rounds))
    n = len(rounds)
    flagged = n >= cfg.min_rounds and test.p < cfg.alpha and test.gap <= -cfg.min_gap
    return BelowResult(n, test.gap, test.p, flagged, test)


def _inside(ev: dict[tuple[str, str], SiteEvidence], site: str, region: str,
            cfg: AlarmConfig) -> tuple[float | None, float | None]:  # fmt: skip
    """The inside-the-tumour contrast of ``region`` (ET or TC): the site's centred away
    effect there minus its centred away effect on WT, and the one-sided p of it being
    below ``-delta_inside`` (the two SEs added in quadrature: the regions share cases, so
    their errors correlate positively and this SE is conservative). (None, None) for WT,
    the mean, or without WT evidence."""
    here, whole = ev.get((site, region)), ev.get((site, "WT"))
    if region not in ("ET", "TC") or here is None or whole is None:
        return None, None
    if here.centred is None or whole.centred is None or not here.centred_se:
        return None, None
    contrast = here.centred - whole.centred
    se = math.hypot(here.centred_se, whole.centred_se or 0.0)
    return contrast, p_lower((contrast + cfg.delta_inside) / se)


def labels_check(
    ev: dict[tuple[str, str], SiteEvidence], site: str, cfg: AlarmConfig
) -> LabelsResult | None:
    """The ``labels_disagree`` rule (module docstring) for ``site`` on one check's
    evidence; None when the site's local models have no away evidence from at least
    ``labels_min_models`` rounds."""

    def has(g: str) -> bool:
        e = ev.get((site, g))
        return (
            e is not None and e.away is not None
            and len(e.away.model_rounds) >= cfg.labels_min_models
        )  # fmt: skip

    # per region ET/TC/WT; evidence of the mean only (a site that sends no regions): the mean
    regions = [g for g in TESTED_REGIONS if has(g)] or (["mean"] if has("mean") else [])
    k = len(TESTED_REGIONS) if regions != ["mean"] else 1
    results = []
    for g in regions:
        e = ev.get((site, g))
        if e is None or e.away is None or e.centred is None or not e.centred_se:
            continue
        z = (e.centred + cfg.delta_away) / e.centred_se
        p = min(1.0, k * p_lower(z))
        away_ok = p < cfg.labels_alpha
        home_p = None
        if e.home is not None and e.home_centred is not None and e.home_se:
            home_p = p_lower(-e.home_centred / e.home_se)
        home_ok = (
            home_p is not None and home_p < cfg.labels_alpha
            and e.home_centred is not None and e.home_centred > cfg.delta_home
        )  # fmt: skip
        loss_ok = e.loss_ratio is not None and e.loss_ratio > cfg.loss_ratio
        inside, inside_p = _inside(ev, site, g, cfg)
        inside_ok = inside_p is not None and inside_p < cfg.labels_alpha
        results.append(LabelsResult(away_ok and (inside_ok or home_ok or loss_ok), away_ok, g,
                                    z, p, home_p, e.loss_ratio, e, inside, inside_p))  # fmt: skip
    if not results:
        return None
    return min(results, key=lambda r: (not r.holds, r.p))


def stalled(site: np.ndarray, others: np.ndarray, cfg: AlarmConfig) -> StallResult:
    """Trend test on the last ``stall_window`` models of ``site - others`` (both (n_rounds,))."""
    s = np.asarray(site, dtype=np.float64)[-cfg.stall_window :]
    o = np.asarray(others, dtype=np.float64)[-cfg.stall_window :]
    if s.size < cfg.stall_window:
        return StallResult(float("nan"), 1.0, float("nan"), float("nan"), False)
    x = np.arange(s.size, dtype=np.float64)
    span = float(s.size - 1)
    gap = s - o
    if np.ptp(gap) == 0:
        return StallResult(0.0, 1.0, 0.0, 0.0, False)
    fit = stats.linregress(x, gap, alternative="less")
    site_gain = float(stats.linregress(x, s).slope * span)
    others_gain = float(stats.linregress(x, o).slope * span)
    flagged = (
        fit.pvalue < cfg.stall_alpha
        and -fit.slope * span >= cfg.stall_min_drop
        and site_gain < cfg.stall_max_gain
    )
    return StallResult(float(fit.slope), float(fit.pvalue), site_gain, others_gain, flagged)


def update_outliers(distances: dict[str, float], cfg: AlarmConfig) -> dict[str, float]:
    """Robust z-score of each site's update distance against the other sites of the round.

    Returns ``site -> z`` for every site with a finite distance when at least
    ``outlier_min_sites`` sites have one; ``{}`` otherwise.
    """
    vals = {s: float(d) for s, d in distances.items() if d is not None and np.isfinite(d)}
    if len(vals) < cfg.outlier_min_sites:
        return {}
    out: dict[str, float] = {}
    for site, x in vals.items():
        others = np.array([v for s, v in vals.items() if s != site])
        med = float(np.median(others))
        mad = float(np.median(np.abs(others - med)))
        scale = max(1.4826 * mad, cfg.outlier_rel_floor * abs(med), 1e-12)
        out[site] = (x - med) / scale
    return out


def volatility(curve: np.ndarray) -> float:
    """Standard deviation of the round-to-round changes of a curve (n,); NaN if n < 3."""
    c = np.asarray(curve, dtype=np.float64)
    return float(np.std(np.diff(c), ddof=1)) if c.size >= 3 else float("nan")


def paired_series(curves: Curves, site: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The site's curve and the mean of the other sites' curves on their common rounds.

    The others' value of a round is their case-weighted mean (the federation without the
    site); only rounds where the site and at least one other site reported are kept.
    """
    rounds, mine, theirs = [], [], []
    for mr, s in curves.get(site, {}).items():
        parts = [c[mr] for o, c in curves.items() if o != site and mr in c and c[mr].n > 0]
        if not parts or not np.isfinite(s.mean):
            continue
        w = np.array([p.n for p in parts], dtype=np.float64)
        rounds.append(mr)
        mine.append(s.mean)
        theirs.append(float(np.average([p.mean for p in parts], weights=w)))
    return np.array(mine), np.array(theirs), rounds


@dataclass(frozen=True)
class SiteTests:
    """The curve tests of one site after a round: models used and both results."""

    site: str
    models: list[int]
    below: BelowResult
    stall: StallResult
    stall_held: bool  # ``stalled`` also held in the previous ``stall_persist - 1`` rounds
    volatility: float  # std of the site's round-to-round change (the study's "unstable")
    others_volatility: float  # the same for the mean of the other sites


def site_tests(store: RunStore, rnd: int, cfg: AlarmConfig) -> list[SiteTests]:
    """``below_federation`` and ``stalled`` for every site after round ``rnd``.

    Round r validates model r-1 (the store's convention), so models ``<= rnd - 1`` count.
    """
    cfg = cfg.for_task(store.meta.task())
    curves = site_curves(store, cfg.region, cfg.metric, upto=rnd - 1)
    if cfg.skip_initial:
        curves = {s: {m: v for m, v in c.items() if m > 0} for s, c in curves.items()}
    out = []
    for site in sorted(curves):
        mine, theirs, rounds = paired_series(curves, site)
        if cfg.window is not None:
            mine, theirs, rounds = mine[-cfg.window :], theirs[-cfg.window :], rounds[-cfg.window :]
        st = stalled(mine, theirs, cfg)
        # A trend test repeated every round fires by chance now and then: ask persistence.
        held = all(
            stalled(mine[: mine.size - k], theirs[: theirs.size - k], cfg).flagged
            for k in range(1, cfg.stall_persist)
        )
        out.append(SiteTests(
            site, rounds, below_federation(curves, site, cfg), st, held,
            volatility(mine), volatility(theirs),
        ))  # fmt: skip
    return out


def evidence_rounds(rows: list[CrossRow]) -> list[int]:
    """The rounds that brought away evidence in ``rows`` (the checks ``labels_disagree``
    counts for persistence)."""
    return sorted({r.round for r in rows if not r.home})


def labels_results(store: RunStore, rnd: int, cfg: AlarmConfig) -> dict[str, LabelsResult]:
    """Per site, the ``labels_disagree`` rule after round ``rnd``, ``holds`` only when it
    also held at the previous ``labels_persist - 1`` evidence rounds."""
    rows = store.cross(metric=CROSS_DICE_DIFF, upto_round=rnd)
    checks = evidence_rounds(rows)
    if not checks:
        return {}
    site_rounds = store.site_rounds()
    points = [rnd, *reversed(checks[:-1] if checks[-1] == rnd else checks)]
    points = points[: cfg.labels_persist]
    now: dict[str, LabelsResult] = {}
    held: dict[str, bool] = {}
    for i, upto in enumerate(points):
        ev = evidence_from_rows(rows, site_rounds, window=cfg.evidence_window, upto=upto,
                                between=cfg.labels_between,
                                first_model=cfg.evidence_first_model)  # fmt: skip
        for site in sorted({s for s, _ in ev}):
            res = labels_check(ev, site, cfg)
            if i == 0:
                if res is not None:
                    now[site] = res
                    held[site] = res.holds
            elif site in held:
                held[site] = held[site] and res is not None and res.holds
    if len(points) < cfg.labels_persist:
        held = dict.fromkeys(held, False)
    return {
        s: r if held[s] == r.holds else replace(r, holds=False)
        for s, r in now.items()
    }  # fmt: skip


def labels_text(site: str, r: LabelsResult, cfg: AlarmConfig) -> str:
    """The plain sentence of a ``labels_disagree`` alarm."""
    e, a = r.evidence, r.evidence.away
    assert a is not None and e.centred is not None
    verb = "lose" if a.value < 0 else "gain"
    ref = f"{e.away_reference:+.2f}" if e.away_reference is not None else "n/a"
    parts = [
        f"{site} {r.region}: its local models {verb} {abs(a.value):.2f} Dice on {a.n_cases} "
        f"cases at {len(a.evaluators)} sites vs the federation's {ref} (models "
        f"{_span(a.model_rounds)}, z={r.z:.1f} beyond a margin of {cfg.delta_away:g}, "
        f"{p_text(r.p)})"
    ]
    if r.inside is not None and r.inside_p is not None and r.inside < 0:
        parts.append(f"it loses {-r.inside:.2f} more there than on the whole tumour "
                     f"({p_text(r.inside_p)}: labels inside the tumour?)")  # fmt: skip
    if e.home is not None:
        parts.append(f"its own model gains {e.home.value:+.2f} on its {e.home.n_cases} cases "
                     f"({e.home_centred:+.2f} beyond the others', {p_text(r.home_p)})")  # fmt: skip
    else:
        parts.append("no home check (too few own validation cases)")
    if r.loss_ratio is not None:
        parts.append(f"its training loss is {r.loss_ratio:.2f}x the others' median")
    return "; ".join(parts)


#: what a stalled or outlying site's text adds when cross-site evidence decides its level
_ASIDE = {
    AlarmLevel.OBSERVATION: "; the cross-site evidence does not say its labels disagree: "
    "different data?",
    AlarmLevel.ALARM: "",
}


def evaluate_alarms(store: RunStore, rnd: int, cfg: AlarmConfig) -> list[Alarm]:
    """The alarms and observations that hold after round ``rnd``, from data of rounds
    ``<= rnd`` only."""
    if not cfg.enabled:
        return []
    cfg = cfg.for_task(store.meta.task())
    alarms: list[Alarm] = []
    labels = labels_results(store, rnd, cfg)
    cross_run = bool(labels) or has_away_evidence(store, rnd)
    for site, r in sorted(labels.items()):
        if not r.holds:
            continue
        a = r.evidence.away
        assert a is not None
        text = labels_text(site, r, cfg)
        alarms.append(Alarm(rnd, site, LABELS, text, AlarmLevel.ALARM, AlarmEvidence(
            kind=AlarmKind.LABELS_DISAGREE, region=r.region, statistic="z", value=r.z, p=r.p,
            effect=r.evidence.centred, margin=cfg.delta_away, n_cases=a.n_cases,
            evaluators=list(a.evaluators), model_rounds=list(a.model_rounds), text=text,
        )))  # fmt: skip
    # with cross-site evidence, the other kinds notify only for a site whose labels it flags
    flagged = {s for s, r in labels.items() if r.holds}
    for t in site_tests(store, rnd, cfg):
        site, b, st, rounds = t.site, t.below, t.stall, t.models
        corroborated = site in flagged
        level = AlarmLevel.ALARM if corroborated or not cross_run else AlarmLevel.OBSERVATION
        if b.flagged and b.test is not None:
            text = (
                f"{site} {cfg.region} {cfg.metric} below the other sites by {-b.median_gap:.3f} "
                f"on its {b.test.n_cases} cases against the others' {b.test.n_others} (models "
                f"{_span(b.test.models)} collapsed per case, t={b.test.t:.1f}, {p_text(b.p)})"
            )
            if level == AlarmLevel.OBSERVATION:
                text += ("; the cross-site evidence does not say its labels disagree: "
                         "harder or different data?")  # fmt: skip
            elif corroborated:
                text += "; the cross-site evidence says its labels disagree"
            alarms.append(Alarm(rnd, site, BELOW, text, level, AlarmEvidence(
                kind=AlarmKind.BELOW_FEDERATION, region=cfg.region, statistic="welch_t",
                value=b.test.t, p=b.p, effect=b.median_gap, margin=cfg.min_gap,
                n_cases=b.test.n_cases, model_rounds=list(b.test.models), text=text,
            )))  # fmt: skip
        if st.flagged and t.stall_held:
            text = (
                f"{site} {cfg.region} {cfg.metric} changed by {st.site_gain:+.3f} over the last "
                f"{cfg.stall_window} models while the other sites gained "
                f"{st.others_gain:+.3f} (gap trend p={st.p:.3g})"
            ) + _ASIDE[level]
            alarms.append(Alarm(rnd, site, STALLED, text, level, AlarmEvidence(
                kind=AlarmKind.STALLED, region=cfg.region, statistic="slope", value=st.slope,
                p=st.p, effect=st.site_gain - st.others_gain, margin=cfg.stall_min_drop,
                model_rounds=rounds[-cfg.stall_window :], text=text,
            )))  # fmt: skip
    if cfg.update_outlier is False:
        return alarms
    # no single update seen (privacy: secure aggregation, HE, site-level DP): no norms, no check
    rows = [r for r in store.site_rounds() if r.round == rnd and r.status == SiteRoundStatus.OK]
    use_dist = any(r.update_distance is not None for r in rows)
    dist = {r.site: (r.update_distance if use_dist else r.update_norm) for r in rows}
    label = "update distance to the aggregate" if use_dist else "update norm"
    for site, z in sorted(update_outliers(dist, cfg).items()):  # type: ignore[arg-type]
        if z > cfg.outlier_z:
            others = [v for s, v in dist.items() if s != site and v is not None]
            med = float(np.median(others))
            text = (f"{site} {label} {dist[site]:.4g} vs median {med:.4g} of the other sites "
                    f"(robust z={z:.1f} > {cfg.outlier_z})")  # fmt: skip
            corroborated = site in flagged
            level = AlarmLevel.ALARM if corroborated or not cross_run else AlarmLevel.OBSERVATION
            text += _ASIDE[level]
            alarms.append(Alarm(rnd, site, OUTLIER, text, level, AlarmEvidence(
                kind=AlarmKind.UPDATE_OUTLIER, region="-", statistic="robust_z", value=z,
                effect=float(dist[site]) - med, margin=cfg.outlier_z,  # type: ignore[arg-type]
                evaluators=sorted(s for s in dist if s != site), model_rounds=[rnd], text=text,
            )))  # fmt: skip
    return alarms


def check_alarms(
    store: RunStore, rnd: int, cfg: AlarmConfig, *, notify: bool = True,
    observations: bool = False,
) -> list[Alarm]:  # fmt: skip
    """Evaluate, store and notify the alarms of round ``rnd``; returns the alarms that hold
    (and the observations with ``observations``).

    Call after round ``rnd`` is aggregated and its site rows, validations and cross-site
    rows are stored. A failing notification command is logged in the store's events,
    never raised; observations are stored and logged, never notified.
    """
    found = evaluate_alarms(store, rnd, cfg)
    known = {(a.site, a.kind) for a in store.alarms() if a.round < rnd}
    for a in found:
        stored = store.record_alarm(a)
        if not stored:
            continue
        if a.level == AlarmLevel.OBSERVATION:
            store.log(f"observation round {a.round} site {a.site} {a.kind}: {a.message}")
            continue
        store.log(f"alarm round {a.round} site {a.site} {a.kind}: {a.message}", "warning")
        if notify and cfg.notify_command and (a.site, a.kind) not in known:
            _notify(store, a, cfg)
    return [a for a in found if observations or a.level == AlarmLevel.ALARM]


def replay_alarms(
    store: RunStore, cfg: AlarmConfig, *, notify: bool = False, observations: bool = False
) -> list[Alarm]:
    """Run ``check_alarms`` for every round of the store in order (post-hoc evaluation);
    returns the alarms (and the observations with ``observations``)."""
    out: list[Alarm] = []
    for r in store.rounds():
        if r["status"] == RoundStatus.DONE:
            out.extend(check_alarms(store, int(r["round"]), cfg, notify=notify,
                                    observations=observations))  # fmt: skip
    return out


def first_flagged(alarms: list[Alarm]) -> dict[tuple[str, str], int]:
    """``(site, kind) -> first round`` it was flagged."""
    first: dict[tuple[str, str], int] = {}
    for a in sorted(alarms, key=lambda a: a.round):
        first.setdefault((a.site, a.kind), a.round)
    return first


def notify_env(store: RunStore, a: Alarm) -> dict[str, str]:
    """The variables the notification command gets besides the inherited environment."""
    return {
        "FEDSEG_ALARM_RUN": str(Path(store.path).parent),
        "FEDSEG_ALARM_ROUND": str(a.round),
        "FEDSEG_ALARM_SITE": a.site,
        "FEDSEG_ALARM_KIND": str(a.kind),
        "FEDSEG_ALARM_MESSAGE": a.message,
        "FEDSEG_ALARM_LEVEL": AlarmLevel(a.level).value,
        "FEDSEG_ALARM_EVIDENCE": a.evidence.model_dump_json() if a.evidence else "{}",
    }


def _notify(store: RunStore, a: Alarm, cfg: AlarmConfig) -> None:
    assert cfg.notify_command
    env = dict(os.environ)
    env.update(notify_env(store, a))
    try:
        done = subprocess.run(
            cfg.notify_command, env=env, capture_output=True, text=True,
            timeout=cfg.notify_timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            store.log(
                f"alarm notification {cfg.notify_command[0]} exited {done.returncode}: "
                f"{done.stderr.strip()[-300:]}",
                "error",
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        store.log(f"alarm notification {cfg.notify_command[0]} failed: {exc}", "error")
