"""The run report: one self-contained HTML file (figures embedded as base64 PNG).

Sections: summary, alarms, validation curves (per site and pooled, 95% CI, per region),
final-model selection (singlet and triplet), site contributions, site updates, model
comparison (violins and paired Wilcoxon table from site-side per-case CSVs, optional),
the plan, and the last events. Reads the run store read-only.
"""

from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path

from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.run_folder import PLAN_FILE, REPORT_FILE, RoundStatus, SiteRoundStatus
from fedseg.tracking import figures
from fedseg.tracking.alarms import (
    AlarmConfig,
    evaluate_alarms,
    run_alarm_config,
    site_tests,
)
from fedseg.tracking.contributions import contributions
from fedseg.tracking.curves import ALL_REGIONS, federation_curve, site_curves
from fedseg.tracking.paired_test import CaseTable, compare_tables, fmt_p, read_case_tables
from fedseg.tracking.selection import choose
from fedseg.tracking.status import alarm_spans, open_run, read_status
from fedseg.tracking.store import Alarm, RunStore

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;display:block;margin:.6em 0}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.alarm{color:#b00;font-weight:600}.note{color:#666;font-size:.9em}
"""


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows besides the run store: per-case CSVs and their labels."""

    case_csvs: tuple[Path, ...] = ()
    labels: tuple[str, ...] = ()


def img(png: bytes, alt: str) -> str:
    """An <img> tag with the PNG embedded as a data URI."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(head: list[str], rows: list[list[object]]) -> str:
    """An HTML table; numbers right-aligned, text left-aligned."""

    def cell(tag: str, v: object) -> str:
        cls = "" if isinstance(v, int | float) or tag == "th" else ' class="l"'
        return f"<{tag}{cls}>{html.escape(_fmt(v))}</{tag}>"

    out = ["<table><tr>", *(cell("th", h) for h in head), "</tr>"]
    for r in rows:
        out += ["<tr>", *(cell("td", v) for v in r), "</tr>"]
    out.append("</table>")
    return "".join(out)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def load_case_inputs(inputs: ReportInputs) -> dict[str, CaseTable]:
    """Per-case tables by label (file stem or the ``model`` column; labels override)."""
    tables: dict[str, CaseTable] = {}
    for path in inputs.case_csvs:
        for name, t in read_case_tables(path).items():
            label = name if name != path.stem or name not in tables else f"{path.stem}*"
            tables[label] = t
    if inputs.labels:
        if len(inputs.labels) != len(tables):
            raise FedsegError(
                f"{len(inputs.labels)} labels for {len(tables)} models in the case CSVs; "
                "give one --label per model"
            )
        tables = dict(zip(inputs.labels, tables.values(), strict=True))
    return tables


def stored_or_replayed_alarms(store: RunStore, cfg: AlarmConfig) -> tuple[list[Alarm], bool]:
    """The stored alarms, or (when none were stored) the alarms recomputed round by round."""
    stored = store.alarms()
    if stored:
        return stored, False
    out: list[Alarm] = []
    for r in store.rounds():
        if r["status"] == RoundStatus.DONE:
            out.extend(evaluate_alarms(store, int(r["round"]), cfg))
    return out, True


def build_report(run: Path, inputs: ReportInputs = ReportInputs()) -> str:
    """The report's HTML text for the run folder ``run``."""
    run = Path(run)
    store = open_run(run)
    try:
        return _build(run, store, inputs)
    finally:
        store.close()


def write_report(run: Path, out: Path | None = None, inputs: ReportInputs = ReportInputs()) -> Path:
    """Write the report (default ``RUN/report.html``) and return its path."""
    text = build_report(run, inputs)
    out = Path(out) if out is not None else Path(run) / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _build(run: Path, store: RunStore, inputs: ReportInputs) -> str:
    tables = load_case_inputs(inputs)  # fail early on bad CSVs, before any plotting
    cfg = run_alarm_config(run)
    st = read_status(run, store)
    by_region = {g: site_curves(store, g) for g in ALL_REGIONS}
    fed = {g: federation_curve(by_region[g]) for g in ALL_REGIONS}
    alarms, replayed = stored_or_replayed_alarms(store, cfg)
    spans = alarm_spans(alarms)
    flagged: dict[str, int] = {}
    for sp in spans:
        flagged[sp.site] = min(flagged.get(sp.site, sp.first), sp.first)

    parts: list[str] = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>fedseg report: {html.escape(run.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>fedseg run report: {html.escape(run.name)}</h1>",
        f"<p class='note'>{html.escape(str(run.resolve()))}; written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</p>",
    ]
    # -- summary
    planned = f" of {st.rounds_planned}" if st.rounds_planned is not None else ""
    parts.append("<section id='summary'><h2>Summary</h2>")
    parts.append(
        f"<p>State <b>{st.state}</b>, {st.rounds_done}{planned} rounds done, "
        f"{len(st.sites)} sites.</p>"
    )
    parts.append(
        _table(
            [
                "site",
                "last round",
                "state",
                "train cases",
                "val cases",
                "model",
                *(f"Dice {g}" for g in ALL_REGIONS),
                "alarms",
            ],
            [
                [
                    s.site,
                    s.last_round,
                    s.status,
                    s.n_train,
                    s.n_val,
                    s.model_round,
                    *(s.dice.get(g) for g in ALL_REGIONS),
                    ", ".join(s.alarms) or "-",
                ]
                for s in st.sites
            ]
            + (
                [
                    [
                        "federation",
                        "",
                        "",
                        "",
                        "",
                        st.federation_model_round,
                        *(st.federation_dice.get(g) for g in ALL_REGIONS),
                        "",
                    ]
                ]
                if st.federation_dice
                else []
            ),
        )
    )
    parts.append("</section>")
    # -- alarms
    parts.append("<section id='alarms'><h2>Alarms</h2>")
    if replayed:
        parts.append(
            "<p class='note'>No alarm was stored during the run; these were computed now, "
            "round by round, with the plan's alarm settings.</p>"
        )
    if spans:
        parts.append(
            _table(
                ["site", "kind", "first round", "last round", "message"],
                [[s.site, s.kind, s.first, s.last, s.message] for s in spans],
            )
        )
    else:
        parts.append("<p>No alarms: no site was flagged.</p>")
    last = store.last_done_round()
    tests = site_tests(store, last, cfg) if last else []
    if tests:
        parts.append(
            f"<p>Each site against the other sites after round {last}: paired one-sided "
            f"Wilcoxon signed-rank test of the per-model {cfg.region} {cfg.metric} (alarm "
            f"when p &lt; {cfg.alpha} over at least {cfg.min_rounds} models and the median "
            f"gap is at least {cfg.min_gap}), and the trend of the gap over the last "
            f"{cfg.stall_window} models. Volatility: standard deviation of the round-to-round "
            "change of the curve (the study's bad site had unstable curves).</p>"
        )
        parts.append(
            _table(
                [
                    "site",
                    "models",
                    "median gap",
                    "Wilcoxon p",
                    "gap trend /round",
                    "trend p",
                    "volatility",
                    "others' volatility",
                ],
                [
                    [
                        t.site,
                        t.below.n,
                        t.below.median_gap,
                        fmt_p(t.below.p),
                        t.stall.slope,
                        fmt_p(t.stall.p),
                        t.volatility,
                        t.others_volatility,
                    ]
                    for t in tests
                ],
            )
        )
    parts.append("</section>")
    # -- curves
    parts.append("<section id='curves'><h2>Validation curves</h2>")
    if any(by_region[g] for g in ALL_REGIONS):
        parts.append(
            "<p>Dice of the global model on each site's validation cases, per model round "
            "(0 = initial model), with 95% confidence bands mean &plusmn; 1.96 std/&radic;n; "
            "black: all sites' cases pooled. Dashed lines: first alarm of a site.</p>"
        )
        parts.append(img(figures.curves_figure(by_region, fed, flagged), "validation curves"))
    else:
        parts.append("<p>No validation results yet.</p>")
    parts.append("</section>")
    # -- selection
    parts.append("<section id='selection'><h2>Model selection</h2>")
    rows = []
    have_ckpt = bool(store.checkpoints())
    if not have_ckpt:
        parts.append(
            "<p class='note'>The run stored no checkpoints: rounds shown by score "
            "only, nothing can be exported.</p>"
        )
    for kind in ("singlet", "triplet"):
        try:
            picks = choose(store, kind, require_checkpoint=have_ckpt)  # type: ignore[arg-type]
        except FedsegError as exc:
            rows.append([kind, str(exc), "", ""])
            continue
        if kind == "singlet":
            rows.append([kind, "mean", *picks[REGIONS[0]]])  # one pick for all regions
        else:
            rows += [[kind, g, *picks[g]] for g in REGIONS]
    parts.append(
        "<p>Best model round by case-weighted validation Dice over sites (singlet: mean of "
        "ET/TC/WT; triplet: each region). Export with <code>fedseg select RUN --singlet|"
        "--triplet --out DIR</code>.</p>"
    )
    parts.append(_table(["kind", "region", "model round", "Dice"], rows))
    parts.append("</section>")
    # -- contributions
    parts.append("<section id='contributions'><h2>Site contributions</h2>")
    contribs = contributions(store)
    if any(c.rounds for c in contribs):
        parts.append(
            "<p>Estimate from the stored update sizes: each round's change of the pooled "
            "validation Dice is attributed to sites by their share of the aggregate step "
            "(projection of their update on it; shares sum to 1). A site whose update points "
            "away from the others gets a small or negative share. First-order estimate; the "
            "honest measure re-runs the federation without the site.</p>"
        )
        parts.append(
            _table(
                [
                    "site",
                    "rounds",
                    "mean weight",
                    "mean share",
                    "mean alignment (cos)",
                    "Dice gain attributed",
                    "Dice gain on other sites",
                ],
                [
                    [
                        c.site,
                        c.rounds,
                        c.mean_weight,
                        c.mean_share,
                        c.mean_cos,
                        c.dice_gain,
                        c.dice_gain_others,
                    ]
                    for c in contribs
                ],
            )
        )
        parts.append(img(figures.contributions_figure(contribs), "site contributions"))
    else:
        parts.append("<p>No round has update norms and distances for every site.</p>")
    parts.append("</section>")
    # -- updates
    parts.append("<section id='updates'><h2>Site updates</h2>")
    srows = [r for r in store.site_rounds() if r.status == SiteRoundStatus.OK]
    use_dist = any(r.update_distance is not None for r in srows)
    dist: dict[str, dict[int, float]] = {}
    for r in srows:
        v = r.update_distance if use_dist else r.update_norm
        if v is not None:
            dist.setdefault(r.site, {})[r.round] = float(v)
    if dist:
        label = "L2 distance to the aggregate" if use_dist else "L2 norm of the update"
        parts.append(img(figures.updates_figure(dist, label), "site updates"))
    else:
        parts.append("<p>No update sizes recorded.</p>")
    parts.append("</section>")
    # -- comparison
    parts.append("<section id='comparison'><h2>Model comparison</h2>")
    if len(tables) >= 2:
        names = list(tables)
        parts.append(
            "<p>Per-case metrics computed at the sites (per-case CSVs from "
            "<code>fedseg evaluate</code>), each model against the first with a paired "
            "two-sided Wilcoxon signed-rank test.</p>"
        )
        parts.append(img(figures.violin_figure(tables), "per-case Dice violins"))
        crow = []
        for other in names[1:]:
            for c in compare_tables(tables[names[0]], tables[other]):
                crow.append(
                    [
                        f"{other} vs {names[0]}",
                        c.region,
                        c.metric,
                        c.n,
                        c.mean_a,
                        c.mean_b,
                        c.median_a,
                        c.median_b,
                        c.mean_diff,
                        fmt_p(c.p),
                        c.better.replace("A", names[0]).replace("B", other),
                    ]
                )
        parts.append(
            _table(
                [
                    "comparison",
                    "region",
                    "metric",
                    "cases",
                    "mean A",
                    "mean B",
                    "median A",
                    "median B",
                    "mean B-A",
                    "p",
                    "better",
                ],
                crow,
            )
        )
    else:
        parts.append(
            "<p>No per-case results given: run <code>fedseg evaluate</code> at a site for "
            "the initial and final models and pass the CSVs with <code>--case-csv</code>.</p>"
        )
    parts.append("</section>")
    # -- plan, events
    parts.append("<section id='plan'><h2>Plan</h2>")
    plan_path = run / PLAN_FILE
    if plan_path.is_file():
        parts.append(f"<pre>{html.escape(plan_path.read_text())}</pre>")
    else:
        parts.append(f"<p>No {PLAN_FILE} in the run folder.</p>")
    parts.append("</section><section id='events'><h2>Events</h2>")
    ev = store.events()[-50:]
    if ev:
        parts.append(
            _table(
                ["time (UTC)", "level", "message"],
                [[time.strftime("%H:%M:%S", time.gmtime(t)), lvl, msg] for t, lvl, msg in ev],
            )
        )
    else:
        parts.append("<p>No events.</p>")
    parts.append("</section></body></html>")
    return "\n".join(parts)
