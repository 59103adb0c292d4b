"""The dashboard's JSON snapshot of a run: what ``GET /api/state`` returns.

Everything comes from the tracking layer, read through one read-only store: the run's
state, phase, rounds and each site's state and last metrics are ``fedseg status``'s own
``StatusView`` (``tracking.status.read_status``); the curves are ``tracking.curves``'
``site_curves`` and ``federation_curve`` (the one round-score rule) with ``ci95`` bands;
the score's label and groups are the run's ``ScoreSpec`` (Dice over ET/TC/WT for a
segmentation run, SSIM per modality for a synthesis run). Nothing is computed here that
status computes.

Conventions: the snapshot is plain JSON (no NaN: a missing or non-finite number is
``null``); a curve point is ``{"model_round", "mean", "lo", "hi", "n"}`` (``lo``/``hi``:
the 95 % band); ``round`` is what the page shows as the run's round: the running round,
else the number of rounds done.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedseg.model.summary import Summary
from fedseg.run_folder import AlarmLevel
from fedseg.tracking.cross_matrix import cross_cells, cross_matrix
from fedseg.tracking.curves import ALL_REGIONS, ci95, federation_curve, site_curves
from fedseg.tracking.status import (
    SiteStatus,
    StatusView,
    alarm_spans,
    modality_text,
    read_status,
    spent_line,
)
from fedseg.tracking.store import Alarm, RunStore

#: events the snapshot carries (the latest ones)
EVENTS_TAIL = 20


def run_state(run: Path, store: RunStore) -> dict[str, Any]:
    """The JSON snapshot of the run folder ``run`` read through ``store`` (read-only)."""
    view = read_status(run, store)
    spec = view.score
    curves = {g: site_curves(store, g) for g in spec.all_groups}
    return clean(
        {
            "run": Path(run).resolve().name,
            "task": str(spec.task),
            "score": {
                "label": spec.label,
                "metric": spec.metric,
                "group_word": spec.group_word,
                "groups": list(spec.groups),
                "all_groups": list(spec.all_groups),
            },
            "state": str(view.state),
            "phase": view.phase,
            "round": view.running_round or view.rounds_done,
            "rounds_done": view.rounds_done,
            "rounds_planned": view.rounds_planned,
            "running_round": view.running_round,
            "error": view.cause.message if view.cause is not None else view.error,
            "cause": view.cause.kind if view.cause is not None else None,
            "federation": {
                "model_round": view.federation_model_round,
                "scores": view.federation_scores,
            },
            "sites": [_site(x, view) for x in view.sites],
            "curves": {
                g: {
                    "sites": {s: _points(c) for s, c in by_site.items()},
                    "federation": _points(federation_curve(by_site)),
                }
                for g, by_site in curves.items()
            },
            "alarms": alarm_list(store.alarms(observations=True)),
            "cross": cross_site(store),
            "contributions": contributions_table(store),
            "events": [
                {"time": t, "level": level, "message": msg}
                for t, level, msg in store.events()[-EVENTS_TAIL:]
            ],
            "synthesis": _synthesis(view),
            "privacy": _privacy(view),
            "models_kept": view.models_kept,
        }
    )


def alarm_list(alarms: list[Alarm]) -> list[dict[str, Any]]:
    """Alarms, then observations (``level``), each (site, kind) as one span of rounds
    (``status.alarm_spans``) with the message and evidence of its latest round."""
    out = []
    for level in AlarmLevel:
        mine = [a for a in alarms if AlarmLevel(a.level) == level]
        latest = {(a.site, a.kind): a for a in sorted(mine, key=lambda a: a.round)}
        for span in alarm_spans(mine):
            ev = latest[(span.site, span.kind)].evidence
            out.append({
                "site": span.site, "kind": span.kind, "level": str(level),
                "first": span.first, "last": span.last, "message": span.message,
                "evidence": ev.model_dump(mode="json") if ev is not None else None,
            })  # fmt: skip
    return out


def cross_site(store: RunStore) -> dict[str, Any] | None:
    """The cross-site matrix per region (``tracking.cross_matrix``: each model site's local
    models at each evaluating site, the paired Dice difference against the global model,
    rounds collapsed): ``{"regions": {region: {"models", "evaluators", "z", "n"}}}``; None
    for a run without cross-site rows."""
    rows = store.cross()
    if not rows:
        return None
    regions: dict[str, Any] = {}
    for region in (*ALL_REGIONS, *sorted({r.region for r in rows} - set(ALL_REGIONS))):
        cells = cross_cells(rows, region=region)
        if not cells:
            continue
        models, evaluators, m = cross_matrix(cells)
        n = {(c.model_site, c.eval_site): c.n for c in cells}
        regions[region] = {
            "models": models,
            "evaluators": evaluators,
            "z": m.tolist(),
            "n": [[n.get((a, b)) for b in evaluators] for a in models],
        }
    if not regions:
        return None
    return {"regions": regions, "default": "mean" if "mean" in regions else next(iter(regions))}


def contributions_table(store: RunStore) -> list[dict[str, Any]] | None:
    """Each site's contribution estimated from the cross-site evidence, most harmful first
    (``tracking.contributions.estimate_contributions``: effect, its 95 % interval and
    verdict in the region where the site is worst, and per region); None when the run has
    no estimate (no cross-site rows, a privacy plan, a synthesis run) or the installed
    tracking layer has none yet."""
    from fedseg.tracking import contributions

    estimate = getattr(contributions, "estimate_contributions", None)
    found = estimate(store) if estimate is not None else []
    if not found:
        return None
    return [
        {
            "site": c.site, "effect": c.effect, "se": c.se, "low": c.low, "high": c.high,
            "verdict": c.verdict, "region": c.region, "per_region": c.per_region,
            "n_cases": c.n_cases, "evaluators": list(c.evaluators),
            "model_rounds": list(c.model_rounds),
        }
        for c in found
    ]  # fmt: skip


def _site(x: SiteStatus, view: StatusView) -> dict[str, Any]:
    mods = view.synthesis.modalities.get(x.site) if view.synthesis is not None else None
    return {
        "site": x.site,
        "live": x.live,
        "status": x.status,
        "last_round": x.last_round,
        "n_train": x.n_train,
        "n_val": x.n_val,
        "train_loss": x.train_loss,
        "update_distance": x.update_distance,
        "wall_s": x.wall_s,
        "model_round": x.model_round,
        "scores": x.scores,
        "alarms": x.alarms,
        "error": x.error,
        "device": x.compute.device if x.compute else None,
        "precision": x.compute.precision if x.compute else None,
        "modalities": modality_text(mods) if view.synthesis is not None else None,
        "has": list(mods) if mods is not None else None,  # a synthesis site's modalities
    }


def _points(curve: dict[int, Summary]) -> list[dict[str, Any]]:
    out = []
    for mr, s in sorted(curve.items()):
        lo, hi = ci95(s)
        out.append({"model_round": mr, "mean": s.mean, "lo": lo, "hi": hi, "n": s.n})
    return out


def _synthesis(view: StatusView) -> dict[str, Any] | None:
    x = view.synthesis
    if x is None:
        return None
    return {"phase": x.phase, "round": x.round, "pretrain_rounds": x.pretrain_rounds}


def _privacy(view: StatusView) -> dict[str, Any] | None:
    p = view.privacy
    if p is None:
        return None
    return {"mechanisms": p.mechanisms, "spent": spent_line(p)}


def clean(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN) and enums
    as their values; dicts, lists and tuples recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, str):
        return str(value)  # a StrEnum as its plain value
    return value
