"""Automatic alarms from what sites already send: validation summaries and update sizes.

Three checks, each a plain function on arrays, run together by ``check_alarms`` after
every round (the federation calls it; ``fedseg alarms RUN`` replays it on a finished run):

- ``below_federation``: the site's per-model mean Dice is below the mean of the other
  sites over the validated models so far. One-sided Wilcoxon signed-rank test of the
  paired per-round differences (as the seed study did by hand), fired only with at least
  ``min_rounds`` pairs, ``p < alpha`` and a median gap of at least ``min_gap`` Dice (the
  effect-size floor that keeps clean but slightly harder sites quiet).
- ``stalled``: over the last ``stall_window`` models the others improve while the site
  does not: the gap (site - others) falls with a significant linear trend (one-sided
  ``p < stall_alpha``), by at least ``stall_min_drop`` Dice over the window, and the
  site's own gain over the window is below ``stall_max_gain``, in ``stall_persist``
  consecutive rounds.
- ``update_outlier``: the site's update distance to the aggregate (``update_distance``;
  ``update_norm`` when absent) is a robust outlier against the other sites of that round:
  ``(x - median(others)) / scale > outlier_z`` where ``scale`` is ``1.4826 * MAD(others)``
  but never below ``outlier_rel_floor * median(others)``: with 2-4 others the MAD alone can
  be near zero, and clean sites' update sizes differ by up to ~1.5x in a real FedAvg run
  (measured on synthetic sites), so by default only an update about twice the others' size
  or more is flagged.

The watched metric and region are the plan's ``alarms`` read for the run's task
(``AlarmConfig.for_task``, the store's meta ``task``): a segmentation run's mean Dice, a
synthesis run's brain-masked SSIM averaged over the modalities each site validates
(``curves``); ``min_gap`` and the stall thresholds are in that metric's units.

Each alarm that holds is stored for the round it was checked in (``alarms`` table); the
notification command runs once per (site, kind), the first time it is stored.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from fedseg.plan import AlarmConfig, read_run_plan
from fedseg.run_folder import RoundStatus, SiteRoundStatus
from fedseg.tracking.curves import Curves, site_curves
from fedseg.tracking.store import Alarm, RunStore

BELOW = "below_federation"
STALLED = "stalled"
OUTLIER = "update_outlier"
KINDS: tuple[str, ...] = (BELOW, STALLED, OUTLIER)


def run_alarm_config(run: Path) -> AlarmConfig:
    """The alarm settings of the plan the run folder recorded (defaults for a run without
    a plan: a centralized run)."""
    plan = read_run_plan(run)
    return plan.alarms if plan is not None else AlarmConfig()


@dataclass(frozen=True)
class BelowResult:
    """Outcome of ``below_federation``: pairs used, median gap (Dice), one-sided p-value."""

    n: int
    median_gap: float
    p: float
    flagged: bool


@dataclass(frozen=True)
class StallResult:
    """Outcome of ``stalled``: gap slope per round, its p-value, the gains over the window."""

    slope: float
    p: float
    site_gain: float
    others_gain: float
    flagged: bool


def below_federation(site: np.ndarray, others: np.ndarray, cfg: AlarmConfig) -> BelowResult:
    """Paired one-sided Wilcoxon test that ``site < others`` (both (n_rounds,), same rounds)."""
    diff = np.asarray(site, dtype=np.float64) - np.asarray(others, dtype=np.float64)
    n = int(diff.size)
    if n == 0:
        return BelowResult(0, float("nan"), 1.0, False)
    gap = float(np.median(diff))
    if n < cfg.min_rounds or not np.any(diff != 0):
        return BelowResult(n, gap, 1.0, False)
    p = float(stats.wilcoxon(diff, alternative="less", zero_method="wilcox").pvalue)
    return BelowResult(n, gap, p, p < cfg.alpha and gap <= -cfg.min_gap)


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
            site, rounds, below_federation(mine, theirs, cfg), st, held,
            volatility(mine), volatility(theirs),
        ))  # fmt: skip
    return out


def evaluate_alarms(store: RunStore, rnd: int, cfg: AlarmConfig) -> list[Alarm]:
    """The alarms that hold after round ``rnd``, from data of rounds ``<= rnd`` only."""
    if not cfg.enabled:
        return []
    cfg = cfg.for_task(store.meta.task())
    alarms: list[Alarm] = []
    for t in site_tests(store, rnd, cfg):
        site, b, st, rounds = t.site, t.below, t.stall, t.models
        if b.flagged:
            alarms.append(Alarm(rnd, site, BELOW, (
                f"{cfg.region} {cfg.metric} below the other sites by {-b.median_gap:.3f} "
                f"(median over {b.n} models {rounds[0]}-{rounds[-1]}; "
                f"one-sided Wilcoxon p={b.p:.3g})"
            )))  # fmt: skip
        if st.flagged and t.stall_held:
            alarms.append(Alarm(rnd, site, STALLED, (
                f"{cfg.region} {cfg.metric} changed by {st.site_gain:+.3f} over the last "
                f"{cfg.stall_window} models while the other sites gained "
                f"{st.others_gain:+.3f} (gap trend p={st.p:.3g})"
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
            alarms.append(Alarm(rnd, site, OUTLIER, (
                f"{label} {dist[site]:.4g} vs median {float(np.median(others)):.4g} of the "
                f"other sites (robust z={z:.1f} > {cfg.outlier_z})"
            )))  # fmt: skip
    return alarms


def check_alarms(
    store: RunStore, rnd: int, cfg: AlarmConfig, *, notify: bool = True
) -> list[Alarm]:
    """Evaluate, store and notify the alarms of round ``rnd``; returns those that hold.

    Call after round ``rnd`` is aggregated and its site rows and validations are stored.
    A failing notification command is logged in the store's events, never raised.
    """
    alarms = evaluate_alarms(store, rnd, cfg)
    known = {(a.site, a.kind) for a in store.alarms() if a.round < rnd}
    for a in alarms:
        stored = store.record_alarm(a)
        if stored:
            store.log(f"alarm round {a.round} site {a.site} {a.kind}: {a.message}", "warning")
        if stored and notify and cfg.notify_command and (a.site, a.kind) not in known:
            _notify(store, a, cfg)
    return alarms


def replay_alarms(store: RunStore, cfg: AlarmConfig, *, notify: bool = False) -> list[Alarm]:
    """Run ``check_alarms`` for every round of the store in order (post-hoc evaluation)."""
    out: list[Alarm] = []
    for r in store.rounds():
        if r["status"] == RoundStatus.DONE:
            out.extend(check_alarms(store, int(r["round"]), cfg, notify=notify))
    return out


def first_flagged(alarms: list[Alarm]) -> dict[tuple[str, str], int]:
    """``(site, kind) -> first round`` it was flagged."""
    first: dict[tuple[str, str], int] = {}
    for a in sorted(alarms, key=lambda a: a.round):
        first.setdefault((a.site, a.kind), a.round)
    return first


def _notify(store: RunStore, a: Alarm, cfg: AlarmConfig) -> None:
    assert cfg.notify_command
    env = dict(os.environ)
    env.update(
        FEDSEG_ALARM_RUN=str(Path(store.path).parent),
        FEDSEG_ALARM_ROUND=str(a.round),
        FEDSEG_ALARM_SITE=a.site,
        FEDSEG_ALARM_KIND=a.kind,
        FEDSEG_ALARM_MESSAGE=a.message,
    )
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
