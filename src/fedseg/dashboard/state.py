"""The dashboard's JSON snapshot of a run: what ``GET /api/state`` returns.

Everything comes from the tracking layer, read through one read-only store. The body is
``fedseg status --json``'s own (``tracking.status.read_status(...).to_json()``: the run's
state, phase, rounds, each site's state and last metrics, alarms and observations with
their evidence, the last events, privacy, a synthesis run's phase and modality sets), so
the page and ``status`` cannot disagree. The snapshot adds what the page draws and status
does not print:

- ``name``: the run folder's name; ``round``: the round the page shows (the running
  round, else the number of rounds done); ``score.all_groups``: the groups and ``mean``;
  ``privacy_spent``: status's one line of the ε spent;
- ``curves``: ``{group: {"sites": {site: points}, "federation": points}}`` from
  ``tracking.curves`` (``site_curves``, and ``federation_curve``, the one round-score
  rule), a point being ``{"model_round", "mean", "lo", "hi", "n"}`` with ``lo``/``hi``
  the 95 % band (``curves.ci95``);
- ``cross``: the cross-site matrix per region (``tracking.cross_matrix``), None without
  cross-site rows;
- ``contributions``: ``tracking.contributions.estimate_contributions`` per site, None
  when the run has no estimate.

Conventions: plain JSON (``status.plain``: no NaN, a missing number is ``null``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedseg.model.summary import Summary
from fedseg.tracking.contributions import estimate_contributions
from fedseg.tracking.cross_matrix import cross_cells, cross_matrix
from fedseg.tracking.curves import ALL_REGIONS, ci95, excused_sites, federation_curve, site_curves
from fedseg.tracking.status import plain, read_status, spent_line
from fedseg.tracking.store import RunStore


def run_state(run: Path, store: RunStore) -> dict[str, Any]:
    """The JSON snapshot of the run folder ``run`` read through ``store`` (read-only)."""
    view = read_status(run, store)
    spec = view.score
    curves = {g: site_curves(store, g) for g in spec.all_groups}
    excused = excused_sites(store)
    out = view.to_json()
    out["score"]["all_groups"] = list(spec.all_groups)
    out.update(
        name=Path(run).resolve().name,
        round=view.running_round or view.rounds_done,
        privacy_spent=spent_line(view.privacy) if view.privacy is not None else None,
        curves={
            g: {
                "sites": {s: _points(c) for s, c in by_site.items()},
                "federation": _points(federation_curve(by_site, excused=excused)),
            }
            for g, by_site in curves.items()
        },
        cross=cross_site(store),
        contributions=contributions_table(store),
    )
    return plain(out)  # type: ignore[no-any-return]


def cross_site(store: RunStore) -> dict[str, Any] | None:
    """The cross-site matrix per region (``tracking.cross_matrix``: each model site's local
    models at each evaluating site, the paired Dice difference against the global model,
    rounds collapsed): ``{"regions": {region: {"models", "evaluators", "z", "n"}},
    "default": region}``; None for a run without cross-site rows."""
    rows = store.cross()
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
    (``estimate_contributions``: effect, 95 % interval and verdict in the region where the
    site is worst, and per region); None when the run has no estimate (no cross-site rows,
    a privacy plan, a synthesis run)."""
    found = estimate_contributions(store)
    return [plain(c) for c in found] or None


def _points(curve: dict[int, Summary]) -> list[dict[str, Any]]:
    out = []
    for mr, s in sorted(curve.items()):
        lo, hi = ci95(s)
        out.append({"model_round": mr, "mean": s.mean, "lo": lo, "hi": hi, "n": s.n})
    return out
