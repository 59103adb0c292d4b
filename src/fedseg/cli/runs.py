"""The coordinator's verbs: status, alarms, select, contributions, report, compare-models."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fedseg.errors import FedsegError
from fedseg.output_paths import check_output_file, check_output_folder
from fedseg.run_folder import PLAN_FILE, REPORT_FILE, STORE_FILE

app = typer.Typer(no_args_is_help=True)


def console() -> Console:
    """A console made at each call, so its width follows the terminal (or COLUMNS) now."""
    return Console()


RUN_ARG = typer.Argument(..., help=f"Run folder (holds {STORE_FILE} and {PLAN_FILE}).")


@app.command("status")
def status(
    run: Path = RUN_ARG,
    follow: bool = typer.Option(False, "--follow", "-f", help="Refresh until the run ends."),
    interval: float = typer.Option(2.0, min=0.2, help="Seconds between refreshes (--follow)."),
    wide: bool = typer.Option(
        False, "--wide", help="Every column, whatever the width [from 120 columns]."
    ),
    lines: bool = typer.Option(False, "--lines", help="One line per site [under 60 columns]."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Rounds done, each site's state and last metrics, alarms (safe while a run writes).

    The layout fits the terminal (or COLUMNS, 80 when piped): every column from 120
    columns, a compact table from 60, else one line per site."""
    from fedseg.tracking.status import RunState, read_status, render_status
    from fedseg.tracking.status_layout import Layout

    if wide and lines:
        raise FedsegError("choose at most one of --wide and --lines")
    if as_json and (follow or wide or lines):
        raise FedsegError("--json prints the status once, as data: drop --follow, --wide, --lines")
    layout = Layout.WIDE if wide else Layout.LINES if lines else None
    s = read_status(run)
    if as_json:
        typer.echo(json.dumps(s.to_json(), indent=2))
        return
    out = render_status(s, layout).console_for(console())
    if not follow:
        out.print(render_status(s, layout))
        return
    with Live(render_status(s, layout), console=out, refresh_per_second=4) as live:
        while s.state in (RunState.RUNNING, RunState.NOT_STARTED):
            time.sleep(interval)
            s = read_status(run)
            live.update(render_status(s, layout))


@app.command("alarms")
def alarms(
    run: Path = RUN_ARG,
    replay: bool = typer.Option(
        False,
        "--replay",
        help="Recompute every round's alarms with the plan's settings, store "
        "the ones not stored yet, and print when each site was first flagged.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the stored alarms and observations as a JSON list."
    ),
) -> None:
    """List a run's alarms with their evidence, then its observations (which notify nobody),
    or recompute them round by round with --replay."""
    from fedseg.tracking.alarms import first_flagged, replay_alarms, run_alarm_config
    from fedseg.tracking.status import (
        OBSERVATIONS_HEADING,
        alarm_spans,
        open_run,
        plain,
        split_levels,
    )
    from fedseg.tracking.store import RunStore

    if replay:
        open_run(run).close()  # clear error if this is not a run folder
        cfg = run_alarm_config(run)
        with RunStore(run) as store:
            found = replay_alarms(store, cfg, notify=False)
        if not as_json:
            t = Table(title="first round flagged")
            for col in ("site", "kind", "round"):
                t.add_column(col)
            for (site, kind), rnd in sorted(first_flagged(found).items()):
                t.add_row(site, kind, str(rnd))
            console().print(t if found else "no alarms")
            return
    store = open_run(run)
    try:
        stored = store.alarms(observations=True)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps([plain(a) for a in stored], indent=2))
        return
    spans, noted = split_levels(alarm_spans(stored))
    if not spans:
        console().print("no alarms")
    for title, rows in (("alarms", spans), (OBSERVATIONS_HEADING, noted)):
        if not rows:
            continue
        t = Table(title=title, title_justify="left")
        for col in ("site", "kind", "first", "last", "message"):
            t.add_column(col, overflow="fold")
        for sp in rows:
            t.add_row(sp.site, sp.kind, str(sp.first), str(sp.last), sp.message)
            # the message is the evidence's text since the evidence exists; older runs differ
            if sp.evidence is not None and sp.evidence.text and sp.evidence.text != sp.message:
                t.add_row("", "", "", "", Text(f"evidence: {sp.evidence.text}", style="dim"))
        console().print(t)


@app.command("select")
def select(
    run: Path = RUN_ARG,
    singlet: bool = typer.Option(
        False, "--singlet", help="One model, best mean Dice (synthesis: the best generator)."
    ),
    triplet: bool = typer.Option(False, "--triplet", help="Three models, best per region."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for model files + selection.json."),
    metric: str | None = typer.Option(
        None, help="Validation metric to maximize [the run's: dice, or ssim for synthesis]."
    ),
) -> None:
    """Export the final model(s) chosen from the per-round checkpoints."""
    from fedseg.tracking.curves import store_score_spec
    from fedseg.tracking.selection import deleted_model_rounds, export_selection
    from fedseg.tracking.status import open_run

    if singlet == triplet:
        raise FedsegError("choose exactly one of --singlet or --triplet")
    check_output_folder(out, "selection folder")
    store = open_run(run)
    try:
        spec = store_score_spec(store)
        sel = export_selection(run, store, "singlet" if singlet else "triplet", out, metric)
        deleted = deleted_model_rounds(store)
    finally:
        store.close()
    t = Table(title=f"{sel.kind} selection -> {out}")
    for col in (spec.group_word, "model round", spec.metric_label(sel.metric), "file"):
        t.add_column(col)
    for region, c in sel.regions.items():
        t.add_row(region, str(c.model_round), f"{c.score:.4f}", c.file)
    console().print(t)
    if deleted:
        console().print(
            f"chosen among the rounds whose model is kept: the plan's retention deleted the "
            f"models of {len(deleted)} validated round(s)"
        )


@app.command("contributions")
def contributions_cmd(
    run: Path = RUN_ARG,
    loso: bool = typer.Option(
        False, "--loso", help="Also re-run the federation once without each site (costly)."
    ),
    loso_dir: Path | None = typer.Option(
        None, help="Folder for the leave-one-site-out runs [RUN/loso]; finished ones are reused."
    ),
) -> None:
    """Estimate how much each site's data improves the global model for the other sites
    (from the cross-site evidence in the store; --loso re-trains without each site)."""
    from fedseg.federation.commands.leave_one_out import loso_values
    from fedseg.plan import read_run_plan
    from fedseg.tracking.contributions import (
        SHARES_NOTE,
        contributions,
        estimate_contributions,
        estimate_kind,
        unavailable,
    )
    from fedseg.tracking.curves import store_score_spec
    from fedseg.tracking.status import open_run

    plan = read_run_plan(run)
    store = open_run(run)
    try:
        label = store_score_spec(store).label
        estimates = estimate_contributions(store, cfg=plan.alarms if plan is not None else None)
        why = None if estimates else unavailable(plan.privacy if plan is not None else None)
        rows = [] if estimates or why else contributions(store)
    finally:
        store.close()
    loso_vals: dict[str, float] = loso_values(run, loso_dir, console()) if loso else {}
    extra = ["leave-one-out"] if loso else []
    if estimates:
        t = Table(title=f"site contributions: {label} the other sites gain from each site "
                  f"({estimate_kind(estimates)})")  # fmt: skip
        # the per-region columns only where they fit: no cell is cut or folded
        wide = console().width >= 110
        regions = ["ET", "TC", "WT", "mean"] if wide else []
        for col in ["site", "verdict", "region", "effect", "95% CI", *regions, "cases",
                    "models", *extra]:  # fmt: skip
            t.add_column(col, justify="left" if col in ("site", "verdict", "region") else "right",
                         no_wrap=col != "site", overflow="fold")  # fmt: skip
        for e in estimates:
            vals = [f"{e.per_region[g]:+.3f}" for g in regions]
            if loso:
                vals.append(f"{loso_vals.get(e.site, float('nan')):.3f}")
            span = f"{e.model_rounds[0]}-{e.model_rounds[-1]}"
            t.add_row(e.site, e.verdict, e.region, f"{e.effect:+.3f}",
                      f"{e.low:+.2f}..{e.high:+.2f}", *vals[: len(regions)], str(e.n_cases),
                      span, *vals[len(regions) :])  # fmt: skip
        console().print(t)
        console().print(
            "negative: the other sites would do better without the site (harmful when the "
            "whole 95% interval is below 0); ranked by its worst region"
        )
    elif why:
        console().print(why)
        if loso:  # only the leave-one-site-out values
            t = Table(title="site contributions (leave one site out)")
            t.add_column("site")
            t.add_column("leave-one-out", justify="right")
            for site, v in sorted(loso_vals.items()):
                t.add_row(site, f"{v:.3f}")
            console().print(t)
        return
    else:
        console().print(SHARES_NOTE)
        t = Table(title="site contributions (first-order estimate from update sizes)")
        cols = ["site", "rounds", "weight", "share", "cos", f"{label} gain", "gain on others"]
        for col in cols + extra:
            t.add_column(col, justify="left" if col == "site" else "right")
        for c in rows:
            vals = [c.mean_weight, c.mean_share, c.mean_cos, c.dice_gain, c.dice_gain_others]
            if loso:
                vals.append(loso_vals.get(c.site, float("nan")))
            t.add_row(c.site, str(c.rounds), *(f"{v:.3f}" for v in vals))
        console().print(t)
    if loso:
        console().print(
            f"leave-one-out: best pooled {label} of the other sites with the site minus without it"
        )


@app.command("report")
def report(
    run: Path = RUN_ARG,
    out: Path | None = typer.Option(None, "--out", "-o", help=f"HTML file [RUN/{REPORT_FILE}]."),
    case_csv: list[Path] = typer.Option(
        [], "--case-csv", help="Per-case CSV from `fedseg evaluate` (repeat: first = baseline)."
    ),
    label: list[str] = typer.Option([], "--label", help="Name per model in the CSVs (repeat)."),
) -> None:
    """Write the self-contained HTML run report (curves, alarms, selection, comparison)."""
    from fedseg.tracking.report import ReportInputs, write_report

    check_output_file(out if out is not None else run / REPORT_FILE, "report")
    path = write_report(run, out, ReportInputs(tuple(case_csv), tuple(label)))
    console().print(f"report written to {path}")


@app.command("compare-models")
def compare_models_cmd(
    csv_a: Path = typer.Argument(..., help="Per-case CSV of model A (the baseline)."),
    csv_b: Path | None = typer.Argument(None, help="Per-case CSV of model B (omit if A has both)."),
    model_a: str | None = typer.Option(None, help="Model A's name in a multi-model CSV."),
    model_b: str | None = typer.Option(None, help="Model B's name in a multi-model CSV."),
    metric: list[str] = typer.Option(["dice", "hd95"], "--metric", help="Metrics (repeat)."),
    alpha: float = typer.Option(0.05, help="Significance level for the 'better' column."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the table as JSON here."),
) -> None:
    """Paired Wilcoxon comparison of two models on the same cases (only the table is shared)."""
    from fedseg.tracking.paired_test import compare_models, fmt_p

    if out is not None:
        check_output_file(out, "comparison JSON")
    rows = compare_models(
        csv_a, csv_b, model_a=model_a, model_b=model_b, metrics=tuple(metric), alpha=alpha
    )
    t = Table(title="model B vs model A (paired Wilcoxon signed-rank, two-sided)")
    for col in ("region", "metric", "cases", "mean A", "mean B", "median A", "median B",
                "mean B-A", "p", "better"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("region", "metric") else "right")
    for r in rows:
        t.add_row(
            r.region,
            r.metric,
            str(r.n),
            *(f"{v:.4f}" for v in (r.mean_a, r.mean_b, r.median_a, r.median_b, r.mean_diff)),
            fmt_p(r.p),
            r.better,
        )
    console().print(t)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "a": str(csv_a), "b": str(csv_b or csv_a), "model_a": model_a, "model_b": model_b,
            "test": "wilcoxon signed-rank, two-sided, paired on (site, case_id)",
            "rows": [r.as_dict() for r in rows],
        }  # fmt: skip
        out.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
        console().print(f"comparison written to {out}")
