"""The run report: one self-contained HTML file (figures embedded as base64 PNG).

Sections: summary, alarms (with their evidence; observations apart), the cross-site
matrix (heatmaps), validation curves (per site and pooled, 95% CI, per region),
final-model selection (singlet and triplet), site contributions, site updates, privacy
(mechanisms, ε per round and site, what the aggregator could see), model comparison
(violins and paired Wilcoxon table from site-side per-case CSVs, optional), the plan, and
the last events. Reads the run store read-only.

A synthesis run (meta ``task``) scores by brain-masked SSIM per modality (``curves``), adds
PSNR curves, and two sections (:mod:`.synthesis`): what left the sites (modality sets,
bytes per round, the disclosure note on a trained generator) and a sample grid of the best
generator on phantom label maps.

Here: the inputs and the assembly; :mod:`.sections` holds one function per section,
:mod:`.markup` the page, section, table and image helpers they share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fedseg.errors import FedsegError
from fedseg.plan import read_run_plan
from fedseg.run_folder import REPORT_FILE, AlarmLevel, RoundStatus, Task
from fedseg.tracking.alarms import AlarmConfig, evaluate_alarms, run_alarm_config
from fedseg.tracking.curves import excused_sites, federation_curve, site_curves, store_score_spec
from fedseg.tracking.paired_test import CaseTable, read_case_tables
from fedseg.tracking.report import markup
from fedseg.tracking.report.sections import (
    alarms_section,
    comparison_section,
    contributions_section,
    cross_site_section,
    curves_section,
    events_section,
    plan_section,
    privacy_section,
    selection_section,
    summary_section,
    updates_section,
)
from fedseg.tracking.report.synthesis import samples_section, what_left_section
from fedseg.tracking.status import alarm_spans, open_run, read_status
from fedseg.tracking.store import Alarm, RunStore


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows besides the run store: per-case CSVs and their labels."""

    case_csvs: tuple[Path, ...] = ()
    labels: tuple[str, ...] = ()


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
    """The stored alarms and observations, or (when none were stored) both recomputed
    round by round."""
    stored = store.alarms(observations=True)
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
    """The page: what several sections share is computed once, then each section."""
    tables = load_case_inputs(inputs)  # fail early on bad CSVs, before any plotting
    spec = store_score_spec(store)
    cfg = run_alarm_config(run).for_task(spec.task)
    by_region = {g: site_curves(store, g) for g in spec.all_groups}
    excused = excused_sites(store)
    fed = {g: federation_curve(by_region[g], excused=excused) for g in spec.all_groups}
    more = {}
    if spec.task == Task.SYNTHESIS:
        psnr = {g: site_curves(store, g, "psnr") for g in spec.all_groups}
        if any(psnr.values()):
            more["psnr"] = (psnr, {g: federation_curve(psnr[g], excused=excused)
                                   for g in spec.all_groups})  # fmt: skip
    found, replayed = stored_or_replayed_alarms(store, cfg)
    alarms = [a for a in found if a.level == AlarmLevel.ALARM]
    observed = alarm_spans([a for a in found if a.level == AlarmLevel.OBSERVATION])
    spans = alarm_spans(alarms)
    flagged: dict[str, int] = {}
    for sp in spans:
        flagged[sp.site] = min(flagged.get(sp.site, sp.first), sp.first)
    written = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    status = read_status(run, store)
    synthesis = []
    if spec.task == Task.SYNTHESIS:
        plan = read_run_plan(run)
        synthesis = [what_left_section(store, status, plan), samples_section(run, store, plan)]
    return markup.page(
        run.name,
        f"{run.resolve()}; written {written}",
        [
            summary_section(status),
            alarms_section(store, cfg, spans, replayed, observed),
            cross_site_section(store),
            curves_section(by_region, fed, flagged, spec, more),
            *synthesis,
            selection_section(store),
            contributions_section(store, run),
            updates_section(store),
            privacy_section(run, store, status.privacy),
            comparison_section(tables),
            plan_section(run),
            events_section(store),
        ],
    )
