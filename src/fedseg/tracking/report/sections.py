"""The report's sections, one function each, in the order of the page.

Each returns the HTML of one ``<section id=...>`` (ids: summary, alarms, crosssite, curves,
selection, contributions, updates, privacy, comparison, plan, events), built from
:mod:`.markup`'s table and image helpers; it reads what it needs from the (read-only) run
store, or from what the report computed once for several sections (status, curves, alarms).
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.summary import Summary
from fedseg.plan import read_run_plan
from fedseg.privacy.visibility import aggregator_view
from fedseg.run_folder import (
    LOSO_DIR,
    PLAN_FILE,
    STORE_FILE,
    RunStatus,
    SiteRoundStatus,
    Task,
    loso_run,
)
from fedseg.tracking import figures
from fedseg.tracking.alarms import AlarmConfig, labels_check, site_tests
from fedseg.tracking.contributions import (
    SHARES_NOTE,
    contributions,
    estimate_contributions,
    estimate_kind,
    leave_one_site_out,
    unavailable,
)
from fedseg.tracking.cross_matrix import cross_cells
from fedseg.tracking.curves import SEGMENTATION_SCORE, Curves, ScoreSpec, store_score_spec
from fedseg.tracking.evidence import site_evidence, with_mean_rows
from fedseg.tracking.paired_test import CaseTable, compare_tables, fmt_p
from fedseg.tracking.report.markup import img, section, table
from fedseg.tracking.selection import choose, deleted_model_rounds
from fedseg.tracking.status import (
    AlarmSpan,
    PrivacyStatus,
    StatusView,
    open_run,
    phase_line,
    spent_line,
)
from fedseg.tracking.store import CROSS_DICE_DIFF, RunStore


def summary_section(st: StatusView) -> str:
    """State, rounds, and per site its last round, cases, model, score per group (Dice
    per region, or SSIM per modality), device and precision; the federation's."""
    planned = f" of {st.rounds_planned}" if st.rounds_planned is not None else ""
    groups = st.score.all_groups
    head = ["site", "last round", "state", "train cases", "val cases", "model",
            *(f"{st.score.label} {g}" for g in groups), "device", "precision",
            "alarms"]  # fmt: skip
    rows: list[list[object]] = [
        [s.site, s.last_round, s.status, s.n_train, s.n_val, s.model_round,
         *(s.scores.get(g) for g in groups), s.compute.device if s.compute else "-",
         s.compute.precision if s.compute else "-", ", ".join(s.alarms) or "-"]
        for s in st.sites
    ]  # fmt: skip
    if st.federation_scores:
        rows.append(["federation", "", "", "", "", st.federation_model_round,
                     *(st.federation_scores.get(g) for g in groups), "", "", ""])  # fmt: skip
    phase = ""
    if st.synthesis is not None:
        phase = f" Synthesis run (ModalityBank generator); {html.escape(phase_line(st.synthesis))}."
    return section(
        "summary",
        "Summary",
        f"<p>State <b>{st.state}</b>, {st.rounds_done}{planned} rounds done, "
        f"{len(st.sites)} sites.{phase}</p>",
        table(head, rows),
    )


def alarms_section(
    store: RunStore,
    cfg: AlarmConfig,
    spans: list[AlarmSpan],
    replayed: bool,
    observations: list[AlarmSpan] | None = None,
) -> str:
    """The alarms with their evidence, the observations apart (shown, never notified),
    each site's cross-site evidence after the last round, and its own-score tests."""
    body: list[str] = []
    if replayed:
        body.append(
            "<p class='note'>No alarm was stored during the run; these were computed now, "
            "round by round, with the plan's alarm settings.</p>"
        )
    head = ["site", "kind", "first round", "last round", "evidence"]
    if spans:
        body.append(table(head, [[s.site, s.kind, s.first, s.last, s.message] for s in spans]))
    else:
        body.append("<p>No alarms: no site was flagged.</p>")
    if observations:
        body.append(
            "<h3>Observations</h3><p>Findings that alone do not say something is wrong, "
            "shown here and never notified: e.g. a lower own score of a site whose local "
            "models do fine on the other sites' cases (harder or different data).</p>"
        )
        body.append(table(head, [[s.site, s.kind, s.first, s.last, s.message]
                                 for s in observations]))  # fmt: skip
    last = store.last_done_round()
    ev = (
        site_evidence(store, last, cfg.evidence_window, between=cfg.labels_between,
                      first_model=cfg.evidence_first_model)
        if last else {}
    )  # fmt: skip
    if ev:
        body.append(
            f"<p>Cross-site evidence after round {last} (the last {cfg.evidence_window} "
            "local models of each site, rounds collapsed per case): the away effect is what "
            "its local models lose (-) or gain on the other sites' cases beyond the other "
            "sites' median, with its standard error; <i>labels_disagree</i> needs it below "
            f"-{cfg.delta_away:g} in some region (Bonferroni p &lt; {cfg.labels_alpha:g}) and "
            f"a loss in ET or TC beyond the WT loss by {cfg.delta_inside:g} (inside), or a "
            f"home gain beyond +{cfg.delta_home:g}, or a training loss above "
            f"{cfg.loss_ratio:g}x the others' median, in {cfg.labels_persist} consecutive "
            f"check(s) on at least {cfg.labels_min_models} local-model rounds.</p>"
        )
        rows: list[list[object]] = []
        for site in sorted({s for s, _ in ev}):
            res = labels_check(ev, site, cfg)
            if res is None:
                continue
            e = res.evidence
            rows.append([site, res.region, e.centred, e.centred_se, fmt_p(res.p),
                         res.inside, fmt_p(res.inside_p) if res.inside_p is not None else "-",
                         e.home_centred, fmt_p(res.home_p) if res.home_p is not None else "-",
                         e.loss_ratio, "yes" if res.holds else "no"])  # fmt: skip
        body.append(table(["site", "region", "away effect", "SE", "away p", "inside",
                           "inside p", "home gain", "home p", "loss ratio", "rule holds now"],
                          rows))  # fmt: skip
    tests = site_tests(store, last, cfg) if last else []
    if tests:
        body.append(
            f"<p>Each site's own {cfg.region} {cfg.metric} against the other sites after round "
            f"{last}: the models' rounds collapsed per case (the same cases are re-measured "
            "every round), the site's cases against the others' pooled cases plus the "
            f"spread of their site means, one-sided (flagged when p &lt; {cfg.alpha} over at "
            f"least {cfg.min_rounds} models and the gap is at least {cfg.min_gap}); and the "
            f"trend of the gap over the last {cfg.stall_window} models. Volatility: standard "
            "deviation of the round-to-round change of the curve.</p>"
        )
        head = ["site", "models", "gap", "below p (cases)", "gap trend /round", "trend p",
                "volatility", "others' volatility"]  # fmt: skip
        rows = [[t.site, t.below.n, t.below.median_gap, fmt_p(t.below.p), t.stall.slope,
                 fmt_p(t.stall.p), t.volatility, t.others_volatility] for t in tests]  # fmt: skip
        body.append(table(head, rows))
    return section("alarms", "Alarms", *body)


def cross_site_section(store: RunStore) -> str:
    """The cross-site matrix as heatmaps per region (whose local models x whose cases)."""
    rows = with_mean_rows(store.cross(metric=CROSS_DICE_DIFF))
    if not rows:
        return section(
            "crosssite",
            "Cross-site validation",
            "<p>No cross-site validation in this run (plan <code>cross_site</code>; it is "
            "off when the plan's privacy hides single updates).</p>",
        )
    cells = {g: cross_cells(rows, region=g) for g in (*REGIONS, "mean")}
    rounds = sorted({r.model_round for r in rows})
    return section(
        "crosssite",
        "Cross-site validation",
        "<p>Each site's local models validated on the other sites' cases, paired with the "
        "global model on the same cases: local minus global Dice, collapsed over the model "
        f"rounds {rounds[0]}-{rounds[-1]} (the cases are the unit). The framed diagonal is "
        "a site's own local model on its own cases (the home check). A row that is red on "
        "the other sites' cases and blue on its own is a site whose labels disagree; a row "
        "red everywhere is a site with different data.</p>",
        img(figures.cross_matrix_figure(cells), "cross-site matrix"),
    )


def curves_section(
    by_region: dict[str, Curves],
    fed: dict[str, dict[int, Summary]],
    flagged: dict[str, int],
    spec: ScoreSpec = SEGMENTATION_SCORE,
    more: dict[str, tuple[dict[str, Curves], dict[str, dict[int, Summary]]]] | None = None,
) -> str:
    """The validation curves figure (per site and pooled, 95% CI, per group: region or
    modality) of the run's metric, and one figure per metric of ``more`` (metric ->
    (curves, federation curves), e.g. a synthesis run's PSNR)."""
    if not any(by_region[g] for g in spec.all_groups):
        return section("curves", "Validation curves", "<p>No validation results yet.</p>")
    what = (
        "Dice of the global model"
        if spec.task == Task.SEGMENTATION
        else "Brain-masked SSIM (and below PSNR, dB) of the global generator's images of each "
        "modality against the real ones"
    )
    figs = [img(figures.curves_figure(by_region, fed, flagged, spec.metric, spec.all_groups),
                "validation curves")]  # fmt: skip
    for metric, (cur, fc) in (more or {}).items():
        figs.append(img(figures.curves_figure(cur, fc, flagged, metric, spec.all_groups),
                        f"validation curves {metric}"))  # fmt: skip
    mean = (
        ""
        if spec.task == Task.SEGMENTATION
        else " Panel <i>mean</i>: each site's mean over the modalities it has (a site "
        "without a modality is scored on the others), pooled over sites."
    )
    return section(
        "curves",
        "Validation curves",
        f"<p>{what} on each site's validation cases, per model round "
        "(0 = initial model), with 95% confidence bands mean &plusmn; 1.96 std/&radic;n; "
        f"black: all sites' cases pooled. Dashed lines: first alarm of a site.{mean}</p>",
        *figs,
    )


def selection_section(store: RunStore) -> str:
    """The best model round, singlet (mean of the groups) and triplet (each group: a
    region; a synthesis run's modalities, shown, not exported)."""
    spec = store_score_spec(store)
    body: list[str] = []
    rows: list[list[object]] = []
    have_ckpt = bool(store.checkpoints())
    if not have_ckpt:
        body.append(
            "<p class='note'>The run stored no checkpoints: rounds shown by score "
            "only, nothing can be exported.</p>"
        )
    deleted = deleted_model_rounds(store)
    if deleted:
        body.append(
            f"<p class='note'>The plan's retention deleted the models of {len(deleted)} "
            "validated round(s); <code>best.pt</code> and the selection below choose among "
            "the rounds whose model is kept.</p>"
        )
    for kind in ("singlet", "triplet"):
        try:
            picks = choose(store, kind, require_checkpoint=have_ckpt)  # type: ignore[arg-type]
        except FedsegError as exc:
            rows.append([kind, str(exc), "", ""])
            continue
        if kind == "singlet":
            rows.append([kind, "mean", *picks[spec.groups[0]]])  # one pick for all groups
        else:
            rows += [[kind, g, *picks[g]] for g in spec.groups if g in picks]
    if spec.task == Task.SEGMENTATION:
        body.append(
            "<p>Best model round by case-weighted validation Dice over sites (singlet: mean "
            "of ET/TC/WT; triplet: each region). Export with <code>fedseg select RUN "
            "--singlet|--triplet --out DIR</code>.</p>"
        )
    else:
        body.append(
            "<p>Best generator round by case-weighted brain-masked SSIM over sites (singlet: "
            "each site's mean over its modalities, the round of <code>best.pt</code>; "
            "triplet: each modality's best round, for information: a generator is one "
            "model). Export with <code>fedseg select RUN --singlet --out DIR</code>.</p>"
        )
    body.append(table(["kind", spec.group_word, "model round", spec.label], rows))
    return section("selection", "Model selection", *body)


def existing_loso(run: Path) -> dict[str, float]:
    """The leave-one-site-out values of the finished runs ``fedseg contributions --loso``
    left in ``RUN/loso`` ({} when none)."""
    base = Path(run) / LOSO_DIR
    if not base.is_dir():
        return {}
    done = []
    for folder in sorted(base.glob("without_*")):
        if (folder / STORE_FILE).is_file():
            with open_run(folder) as st:
                if st.meta.status() == RunStatus.DONE:
                    done.append(folder.name.removeprefix("without_"))
    if not done:
        return {}
    return leave_one_site_out(run, lambda site: loso_run(base, site), done)


def contributions_section(store: RunStore, run: Path | None = None) -> str:
    """Each site's contribution to the other sites from the cross-site evidence, with its
    verdict (``contributions.estimate_contributions``), the leave-one-site-out values
    beside it when ``fedseg contributions --loso`` left them; without cross-site rows the
    share-based estimate with what it is, or why none exists."""
    plan = read_run_plan(run) if run is not None else None
    estimates = estimate_contributions(store, cfg=plan.alarms if plan is not None else None)
    label = store_score_spec(store).label
    loso = existing_loso(run) if run is not None else {}
    if estimates:
        head = ["site", "verdict", "region", "effect", "95% low", "95% high", "ET", "TC", "WT",
                "mean", "cases", "models", *(["leave one site out"] if loso else [])]  # fmt: skip
        rows = [[e.site, e.verdict, e.region, e.effect, e.low, e.high,
                 *(e.per_region[g] for g in (*REGIONS, "mean")), e.n_cases,
                 f"{e.model_rounds[0]}-{e.model_rounds[-1]}",
                 *([loso.get(e.site, float("nan"))] if loso else [])]
                for e in estimates]  # fmt: skip
        return section(
            "contributions",
            "Site contributions",
            f"<p>{label} the other sites gain from including each site, summed over the "
            f"rounds ({estimate_kind(estimates)}): per round, the global model against "
            "the round's model without the site on the other sites' cases (measured), or "
            "the site's local model against the global one, scaled by its weight p/(1-p) "
            "and centred on the round's weighted mean (first-order), in the "
            "region where the site is worst, which ranks it. <b>harmful</b>: the whole 95% "
            "interval is below 0; <b>helps</b>: above 0."
            + (" The last column re-trained the federation without the site." if loso else "")
            + "</p>",
            table(head, rows),
            img(figures.estimates_figure(estimates, label), "site contributions"),
        )
    why = unavailable(plan.privacy if plan is not None else None)
    if why is not None:
        extra = ""
        if loso:
            extra = table(["site", "leave one site out"], [[s, v] for s, v in sorted(loso.items())])
        return section("contributions", "Site contributions", f"<p>{html.escape(why)}.</p>",
                       extra)  # fmt: skip
    contribs = contributions(store)
    if not any(c.rounds for c in contribs):
        return section(
            "contributions",
            "Site contributions",
            "<p>No cross-site validation, and no round has update norms and distances for "
            "every site.</p>",
        )
    head = ["site", "rounds", "mean weight", "mean share", "mean alignment (cos)",
            f"{label} gain attributed", f"{label} gain on other sites",
            *(["leave one site out"] if loso else [])]  # fmt: skip
    rows = [[c.site, c.rounds, c.mean_weight, c.mean_share, c.mean_cos, c.dice_gain,
             c.dice_gain_others, *([loso.get(c.site, float("nan"))] if loso else [])]
            for c in contribs]  # fmt: skip
    return section(
        "contributions",
        "Site contributions",
        f"<p class='note'>{html.escape(SHARES_NOTE)}.</p>"
        "<p>Estimate from the stored update sizes: each round's change of the pooled "
        f"validation {label} (mean) is attributed to sites by their share of the aggregate step "
        "(projection of their update on it; shares sum to 1). A site whose update points "
        "away from the others gets a small or negative share. First-order estimate; the "
        "honest measure re-runs the federation without the site.</p>",
        table(head, rows),
        img(figures.contributions_figure(contribs, label), "site contributions"),
    )


def updates_section(store: RunStore) -> str:
    """Per site and round, the update's distance to the aggregate (else its norm)."""
    srows = [r for r in store.site_rounds() if r.status == SiteRoundStatus.OK]
    use_dist = any(r.update_distance is not None for r in srows)
    dist: dict[str, dict[int, float]] = {}
    for r in srows:
        v = r.update_distance if use_dist else r.update_norm
        if v is not None:
            dist.setdefault(r.site, {})[r.round] = float(v)
    if not dist:
        return section("updates", "Site updates", "<p>No update sizes recorded.</p>")
    label = "L2 distance to the aggregate" if use_dist else "L2 norm of the update"
    return section(
        "updates", "Site updates", img(figures.updates_figure(dist, label), "site updates")
    )


def privacy_section(run: Path, store: RunStore, ps: PrivacyStatus | None) -> str:
    """The mechanisms on, ε per round per site (plot and table) against the budget, and
    what the aggregator could and could not see."""
    plan = read_run_plan(run)
    body: list[str] = []
    if ps is None or not ps.mechanisms:
        body.append("<p>No privacy mechanism in the plan: every site's update travelled to "
                    "the aggregator in clear.</p>")  # fmt: skip
    else:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in ps.mechanisms)
        body.append(f"<p>Mechanisms on:</p><ul>{items}</ul>")
    ledger = store.privacy_ledger() if ps is not None and ps.spent else []
    if ledger and ps is not None:
        line = spent_line(ps)
        body.append(
            f"<p>{html.escape(line or '')}. Accounting: dp-accounting, one Gaussian step per "
            "round (site level, no amplification: participation is public) or per optimizer "
            "step at the Poisson rate of a case (case level).</p>"
        )
        by_site: dict[str, dict[int, float]] = {}
        for rnd, site, sp in ledger:
            by_site.setdefault(site, {})[rnd] = sp.epsilon
        delta = ps.delta if ps.delta is not None else ledger[-1][2].delta
        body.append(img(figures.privacy_figure(by_site, ps.epsilon_budget, delta),
                        "privacy epsilon per round"))  # fmt: skip
        head = ["round", "site", "level", "ε", "δ", "noise multiplier", "clip", "steps",
                "sample rate", "accountant"]  # fmt: skip
        rows = [[rnd, "every site" if site == "*" else site, sp.level, sp.epsilon, sp.delta,
                 sp.sigma, sp.clip_norm, sp.steps, sp.sample_rate, sp.accountant]
                for rnd, site, sp in ledger]  # fmt: skip
        body.append(table(head, rows))
    if plan is not None:
        body.append("<p>What the aggregator could and could not see:</p>")
        body.append(table(["what", "seen by the aggregator"], aggregator_view(plan.privacy)))
        if plan.privacy.dp.level == "site" and plan.privacy.hides_updates:
            body.append("<p class='note'>The sites add the noise in shares: sites that "
                        "collude can remove their own shares from the sum. Fixed-point "
                        "rounding of the noise is not accounted.</p>")  # fmt: skip
    return section("privacy", "Privacy", *body)


def comparison_section(tables: dict[str, CaseTable]) -> str:
    """Per-case violins and paired Wilcoxon tests of each model against the first."""
    if len(tables) < 2:
        return section(
            "comparison",
            "Model comparison",
            "<p>No per-case results given: run <code>fedseg evaluate</code> at a site for "
            "the initial and final models and pass the CSVs with <code>--case-csv</code>.</p>",
        )
    names = list(tables)
    head = ["comparison", "region", "metric", "cases", "mean A", "mean B", "median A",
            "median B", "mean B-A", "p", "better"]  # fmt: skip
    rows: list[list[object]] = [
        [f"{other} vs {names[0]}", c.region, c.metric, c.n, c.mean_a, c.mean_b, c.median_a,
         c.median_b, c.mean_diff, fmt_p(c.p), c.better.replace("A", names[0]).replace("B", other)]
        for other in names[1:]
        for c in compare_tables(tables[names[0]], tables[other])
    ]  # fmt: skip
    return section(
        "comparison",
        "Model comparison",
        "<p>Per-case metrics computed at the sites (per-case CSVs from "
        "<code>fedseg evaluate</code>), each model against the first with a paired "
        "two-sided Wilcoxon signed-rank test.</p>",
        img(figures.violin_figure(tables), "per-case Dice violins"),
        table(head, rows),
    )


def plan_section(run: Path) -> str:
    """The run folder's plan.yaml as written."""
    plan_path = run / PLAN_FILE
    if not plan_path.is_file():
        return section("plan", "Plan", f"<p>No {PLAN_FILE} in the run folder.</p>")
    return section("plan", "Plan", f"<pre>{html.escape(plan_path.read_text())}</pre>")


def events_section(store: RunStore, last: int = 50) -> str:
    """The ``last`` events of the run store."""
    ev = store.events()[-last:]
    if not ev:
        return section("events", "Events", "<p>No events.</p>")
    return section(
        "events",
        "Events",
        table(
            ["time (UTC)", "level", "message"],
            [[time.strftime("%H:%M:%S", time.gmtime(t)), lvl, msg] for t, lvl, msg in ev],
        ),
    )
