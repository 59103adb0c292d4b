"""Run stores with cross-site evidence built by hand: sites with chosen effects and the
noise measured in the issue 16 design study (section 2.3).

A site's profile says what its local models do on the other sites' cases (``away``, Dice
difference against the global model per region), on its own cases (``home``), how its
global-model score sits against the others' (``own``), its training loss and its cases.
On top of the profile the builder adds, per round, a curvature term common to every
local model (each local model is a bit worse than the average), a per-(model, round)
model draw (a pair moves by 0.1-0.26 between training seeds), a per-(model, evaluator)
heterogeneity, and per-case values whose case part is fixed across rounds (the same cases
are re-measured every round) and whose rest is fresh. Each local model of round r is
validated in round r+1 at ``evaluators_per_model`` sites drawn cyclically from a
permutation of the sites with at least 3 validation cases; each such site also checks its
own fresh local model (home). Sites with fewer than 3 validation cases send no summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fedseg.data.labels import REGIONS
from fedseg.model.summary import MIN_SUMMARY_CASES, summarize
from fedseg.tracking.store import CROSS_DICE, CROSS_DICE_DIFF, CrossRow, RunStore, SiteRound

#: per-region offsets of a site's global-model Dice (as tests/tracking/conftest)
OFFSETS = {"ET": -0.06, "TC": 0.0, "WT": 0.06}


def _r(et: float = 0.0, tc: float = 0.0, wt: float = 0.0) -> dict[str, float]:
    return {"ET": et, "TC": tc, "WT": wt}


@dataclass(frozen=True)
class SiteProfile:
    """What a site's data does (see the module docstring); Dice units per region."""

    away: dict[str, float] = field(default_factory=_r)
    home: dict[str, float] = field(default_factory=_r)
    own: float = 0.0
    loss: float = 0.20
    n_val: int = 3
    n_train: int = 8


#: the kinds of site of the benchmark: medians measured on its 20 calibration seeds after
#: round 6 (``benchmarks/monitoring.py``; centred away and home effects, loss ratio x 0.2)
PROFILES: dict[str, SiteProfile] = {
    "clean": SiteProfile(),
    # smaller tumours, noisier scanner: low own score, its local model fine elsewhere
    "hard": SiteProfile(away=_r(0.03, 0.06, 0.05), home=_r(0.05, 0.09, 0.10), own=-0.15, loss=0.21),
    # another scanner: its local models lose elsewhere, most on the whole tumour (WT), no
    # home gain, normal loss
    "scanner": SiteProfile(
        away=_r(-0.11, -0.14, -0.21), home=_r(-0.06, -0.10, -0.14), own=0.05, loss=0.22
    ),
    # eroded labels: lose away (ET most, WT not), a home gain in ET, high loss
    "eroded": SiteProfile(
        away=_r(-0.48, -0.12, -0.01), home=_r(0.16, -0.03, 0.12), own=-0.12, loss=0.31
    ),
    # shifted labels: lose away in ET, no home gain, high loss
    "shifted": SiteProfile(
        away=_r(-0.30, -0.12, 0.05), home=_r(-0.04, 0.03, 0.01), own=-0.15, loss=0.31
    ),
    # NCR<->ED swapped: TC only; a small home gain on TC, normal loss
    "swapped": SiteProfile(
        away=_r(-0.06, -0.38, 0.02), home=_r(-0.01, 0.11, -0.02), own=-0.08, loss=0.20
    ),
    # scrambled labels: lose away everywhere but WT, no home gain, normal loss
    "scramble": SiteProfile(
        away=_r(-0.61, -0.51, 0.07), home=_r(-0.04, -0.17, 0.04), own=-0.25, loss=0.20
    ),
}


def profile(kind: str, **changes: object) -> SiteProfile:
    """A preset of ``PROFILES`` with some fields changed (e.g. ``n_val=2``)."""
    return replace(PROFILES[kind], **changes)  # type: ignore[arg-type]


def _rising(length: int) -> np.ndarray:
    x = np.arange(length)
    return 0.2 + 0.6 * (1 - np.exp(-x / 2.5))


def build_cross_run(
    run: Path,
    sites: dict[str, SiteProfile | str],
    *,
    rounds: int = 8,
    seed: int = 0,
    evaluators_per_model: int = 3,
    cross: bool = True,
    model_sd: float = 0.08,
    case_sd: float = 0.12,
    heterogeneity_sd: float = 0.04,
    evaluator_shift: dict[str, dict[str, float]] | None = None,
    pair_shift: dict[tuple[str, str], dict[str, float]] | None = None,
    round_shift: dict[tuple[str, int], dict[str, float]] | None = None,
) -> Path:
    """Write a finished run of ``rounds`` rounds to ``run`` (see the module docstring);
    ``cross=False`` writes no cross-site rows (a run without cross-site validation);
    ``evaluator_shift`` adds, per evaluator and region, a shift to every local model's
    away effect on that evaluator's cases (e.g. cases without enhancing tumour);
    ``pair_shift`` per (model site, evaluator) and region, a shift of that site's local
    models on that evaluator's cases only (wrong labels that hurt more on some cases);
    ``round_shift`` per (model site, model round) and region, a shift of that local model
    on every evaluator's cases (a model that breaks a region in some rounds only)."""
    shift = evaluator_shift or {}
    pair = pair_shift or {}
    by_round = round_shift or {}
    rng = np.random.default_rng(seed)
    prof = {s: PROFILES[p] if isinstance(p, str) else p for s, p in sites.items()}
    names = sorted(prof)
    evaluators = [s for s in names if prof[s].n_val >= MIN_SUMMARY_CASES]
    base = _rising(rounds + 1)
    # fixed per-case parts: (site, region) -> (n_val,) for the global model's score and for
    # a local model's difference on those cases
    own_case = {(s, g): rng.normal(0, 0.15, prof[s].n_val) for s in names for g in REGIONS}
    diff_case = {(s, g): rng.normal(0, case_sd, prof[s].n_val) for s in names for g in REGIONS}
    run.mkdir(parents=True, exist_ok=True)
    with RunStore(run) as store:
        store.meta.set_planned_rounds(rounds)
        model_draw: dict[tuple[str, int], dict[str, float]] = {}
        for rnd in range(1, rounds + 2):
            last = rnd == rounds + 1  # the final validation after the last round
            if not last:
                store.start_round(rnd)
            mr = rnd - 1  # round r validates model r-1
            for s in names:
                if prof[s].n_val < MIN_SUMMARY_CASES:
                    continue
                summaries = {}
                for g in REGIONS:
                    v = base[mr] + prof[s].own + OFFSETS[g] + own_case[(s, g)]
                    v = v + rng.normal(0, 0.05, v.size)
                    summaries[g] = {"dice": summarize(np.clip(v, 0, 1))}
                store.record_validation(mr, s, summaries)
            if cross and mr >= 1:  # away: the local models of round mr, validated now
                curvature = rng.normal(-0.05, 0.02)
                perm = list(rng.permutation(evaluators))
                rows = []
                for s in names:
                    order = [e for e in perm if e != s]
                    start = perm.index(s) if s in perm else int(rng.integers(len(perm)))
                    chosen = [e for e in perm[start + 1 :] + perm[: start + 1] if e != s]
                    chosen = chosen[: min(evaluators_per_model, len(order))]
                    for e in chosen:
                        away = {g: v + shift.get(e, {}).get(g, 0.0)
                                + pair.get((s, e), {}).get(g, 0.0)
                                + by_round.get((s, mr), {}).get(g, 0.0)
                                for g, v in prof[s].away.items()}  # fmt: skip
                        rows += _cell(rnd, s, mr, e, mr, away, curvature,
                                      model_draw[(s, mr)], diff_case, rng, heterogeneity_sd,
                                      base[mr] + prof[e].own)  # fmt: skip
                store.record_cross(rows)
            if last:
                break
            rows = []
            for s in names:  # this round's local models and their home check
                model_draw[(s, rnd)] = {g: float(rng.normal(0, model_sd)) for g in REGIONS}
                if prof[s].n_val >= MIN_SUMMARY_CASES:
                    early = 0.25 * np.exp(-(rnd - 1) / 1.5)  # every site gains early on
                    rows += _cell(rnd, s, rnd, s, rnd - 1, prof[s].home, early,
                                  {g: v / 2 for g, v in model_draw[(s, rnd)].items()},
                                  diff_case, rng, 0.0, base[rnd - 1] + prof[s].own)  # fmt: skip
                store.record_site_round(SiteRound(
                    rnd, s, "ok", n_train=prof[s].n_train, n_val=prof[s].n_val,
                    train_loss=float(prof[s].loss * (1.1 - 0.03 * rnd) * rng.normal(1, 0.06)),
                    wall_s=10.0, update_norm=float(rng.normal(14, 1.5)),
                    update_distance=float(rng.normal(8, 1.0)),
                ))  # fmt: skip
            if cross:
                store.record_cross(rows)
            store.finish_round(rnd, n_sites=len(names))
    return run


def _cell(
    rnd: int,
    model_site: str,
    model_round: int,
    eval_site: str,
    reference_round: int,
    effect: dict[str, float],
    common: float,
    draw: dict[str, float],
    diff_case: dict[tuple[str, str], np.ndarray],
    rng: np.random.Generator,
    heterogeneity_sd: float,
    level: float,
) -> list[CrossRow]:
    """The dice and dice_diff rows (ET, TC, WT, mean) of one local model at one site."""
    per_case = {}
    for g in REGIONS:
        fixed = diff_case[(eval_site, g)]
        d = effect[g] + common + draw[g] + rng.normal(0, heterogeneity_sd) + fixed
        per_case[g] = np.clip(d + rng.normal(0, 0.06, fixed.size), -1, 1)
    per_case["mean"] = np.mean([per_case[g] for g in REGIONS], axis=0)
    rows = []
    for g, d in per_case.items():
        off = OFFSETS.get(g, 0.0)
        rows.append(CrossRow(rnd, model_site, model_round, eval_site, reference_round, g,
                             CROSS_DICE_DIFF, summarize(d)))  # fmt: skip
        rows.append(CrossRow(rnd, model_site, model_round, eval_site, reference_round, g,
                             CROSS_DICE, summarize(np.clip(level + off + d, 0, 1))))  # fmt: skip
    return rows


def copy_round_rows(store: RunStore, model_round: int, as_round: int) -> None:
    """Store a copy of every cross row of local models of ``model_round`` as if the same
    models had been validated again as models of ``as_round`` (the same cases re-measured)."""
    rows = [r for r in store.cross() if r.model_round == model_round]
    store.record_cross([
        replace(r, round=r.round - model_round + as_round, model_round=as_round,
                reference_round=r.reference_round - model_round + as_round)
        for r in rows
    ])  # fmt: skip
