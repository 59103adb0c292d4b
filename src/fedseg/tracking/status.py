"""The coordinator's live view of a run: rounds, each site's state and metrics, alarms.

``read_status`` opens the run store read-only (safe while the federation writes: WAL),
``render_status`` turns the result into rich tables for ``fedseg status``, in the layout
that fits the width it is drawn at (``tracking.status_layout``: every column from 120
columns, a compact table from 60, else one line per site), ``StatusView.to_json`` into
the JSON of ``fedseg status --json`` (and the dashboard's), and
``alarm_labels`` gives the short per-site alarm text the federation's live table shows.
Each site's device and precision are those of its latest round that recorded them
(``run_folder.ComputeUsed``; "-" for a run from before they were recorded).

A run whose own word is ``running`` or ``starting`` while no live process holds its lock
(``fedseg.run_folder.probe_lock``) has ``crashed``: its writer is gone (``kill -9``, a full
disk, ...), and so has one whose launcher recorded ``crashed``. The cause shown is the
recorded one, else what the folder says now (full, unwritable), else that the writer is
gone. A folder without a lock file (a run from before locks, an in-process run) is taken
at its word.

Privacy (plan ``privacy``): the mechanisms on, and the ε spent so far by each site after
its latest ledger row (``store.privacy_ledger``) against the plan's budget: one row ``*``
for site-level DP (the aggregator's noise covers every site at once), one per site for
case-level DP (each site's DP-SGD).

A synthesis run (meta ``task``): the score is brain-masked SSIM per modality instead of
Dice per region (``curves.ScoreSpec``), and the view adds the phase (pre-training rounds
1..P of ``synthesis.pretrain.rounds``, then the bank rounds; a round's site rows may say
it in ``extra.phase``, else it follows from the round number) and each site's modality
set as it declared it when it joined (meta ``declared``; None there means all four).

The plan is read typed (``fedseg.plan.read_run_plan``; None for a centralized run). The
planned number of rounds is what the coordinator recorded (meta ``planned_rounds``: the
strategy's count, e.g. cycles x sites for a cyclic plan), else the plan's ``rounds``.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.table import Table
from rich.text import Text

from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError
from fedseg.plan import PlanConfig, read_run_plan
from fedseg.privacy.visibility import mechanisms
from fedseg.run_folder import (
    STORE_FILE,
    AlarmEvidence,
    AlarmLevel,
    CauseKind,
    ComputeUsed,
    FailureCause,
    LockState,
    PlateauStop,
    PrivacySpent,
    RoundStatus,
    RunStatus,
    SiteRoundStatus,
    Task,
    folder_problem,
    probe_lock,
)
from fedseg.tracking.curves import (
    SEGMENTATION_SCORE,
    ScoreSpec,
    excused_sites,
    federation_curve,
    site_curves,
    store_score_spec,
)
from fedseg.tracking.selection import deleted_model_rounds
from fedseg.tracking.status_layout import (
    OBSERVATION_MARK,
    Fitted,
    Layout,
    narrow_table,
    number,
    scores_cell,
    scores_header,
    short_alarms,
)
from fedseg.tracking.store import Alarm, RunStore


class ReadOnlyRunStore(RunStore):
    """A ``RunStore`` opened with SQLite's read-only mode: never writes, never creates."""

    def __init__(self, path: Path) -> None:
        given = Path(path)
        path = given / STORE_FILE if given.is_dir() else given
        if not path.is_file():
            raise FedsegError(
                f"{given}: no run store ({STORE_FILE}); give a run folder written by "
                "`fedseg simulate`, `fedseg server start` or `fedseg train`"
            )
        self.path = path
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            self._db.execute("SELECT 1 FROM rounds LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise FedsegError(f"{path}: not a readable fedseg run store ({exc})") from None


def open_run(run: Path) -> ReadOnlyRunStore:
    """The run folder's store, read-only."""
    return ReadOnlyRunStore(Path(run))


def planned_rounds(plan: PlanConfig | None, store: RunStore) -> int | None:
    """Rounds the run will have: the coordinator's record (the strategy's count), else the
    plan's ``rounds`` (a run not started yet); None for a run without a plan."""
    recorded = store.meta.planned_rounds()
    if recorded is not None:
        return recorded
    return plan.rounds if plan is not None else None


class RunState(StrEnum):
    """What ``fedseg status`` says of a run (from its rounds and its meta status)."""

    NOT_STARTED = "not started"
    RUNNING = "running"
    STOPPED = "stopped"  # fewer rounds done than planned, nothing running
    DONE = "done"
    FAILED = "failed"
    CRASHED = "crashed"  # it says running, but its writer is gone (or hung)


@dataclass(frozen=True)
class SiteStatus:
    """One site's latest state: its last round row, its last validation, its alarms."""

    site: str
    last_round: int | None
    status: str
    n_train: int | None
    n_val: int | None
    train_loss: float | None
    update_distance: float | None
    wall_s: float | None
    model_round: int | None
    scores: dict[str, float]  # group (region or modality, and mean) -> the run's metric
    alarms: list[str]
    live: str | None = None  # what the site does now (from the federation's live meta)
    compute: ComputeUsed | None = None  # device and precision of its latest recorded round
    error: str | None = None  # the one line its latest round failed (or was rejected) with
    observations: list[str] = field(default_factory=list)  # kinds noted, never notified


@dataclass(frozen=True)
class AlarmSpan:
    """An alarm kind at a site at one level (``AlarmLevel``: an alarm notifies, an
    observation does not): first and last round it held, latest message and evidence."""

    site: str
    kind: str
    first: int
    last: int
    message: str
    level: AlarmLevel = AlarmLevel.ALARM
    evidence: AlarmEvidence | None = None


@dataclass(frozen=True)
class PrivacyStatus:
    """The privacy mechanisms on, the DP budget (None: no DP) and each ledger site's latest
    spend: ``site -> (round, spent)`` (``*``: every site at once, site-level DP)."""

    mechanisms: list[str]
    epsilon_budget: float | None
    delta: float | None
    spent: dict[str, tuple[int, PrivacySpent]]


def latest_spent(
    ledger: list[tuple[int, str, PrivacySpent]],
) -> dict[str, tuple[int, PrivacySpent]]:
    """Each ledger site's last row (the ledger is ordered by round)."""
    out: dict[str, tuple[int, PrivacySpent]] = {}
    for rnd, site, spent in ledger:
        out[site] = (rnd, spent)
    return out


def privacy_status(plan: PlanConfig | None, store: RunStore) -> PrivacyStatus | None:
    """The run's ``PrivacyStatus``; None when no mechanism is on and nothing was spent."""
    try:
        ledger = store.privacy_ledger()
    except sqlite3.OperationalError:  # a store from before the ledger
        ledger = []
    p = plan.privacy if plan is not None else None
    mech = mechanisms(p) if p is not None else []
    if not mech and not ledger:
        return None
    dp = p.dp if p is not None and p.dp.level != "none" else None
    return PrivacyStatus(
        mech, dp.epsilon if dp else None, dp.delta if dp else None, latest_spent(ledger)
    )


def spent_line(ps: PrivacyStatus) -> str | None:
    """``ε spent: every site 3.12 of 8 at δ=1e-05 (after round 2)`` (None: no ledger row)."""
    if not ps.spent:
        return None
    parts = [
        f"{'every site' if site == '*' else site} {sp.epsilon:.3g} (round {rnd})"
        for site, (rnd, sp) in sorted(ps.spent.items())
    ]
    delta = ps.delta if ps.delta is not None else next(iter(ps.spent.values()))[1].delta
    budget = f" of {ps.epsilon_budget:g}" if ps.epsilon_budget is not None else ""
    return f"ε spent: {', '.join(parts)}{budget} at δ={delta:g}"


class SynthPhase(StrEnum):
    """The phase of a synthesis run's round."""

    PRETRAIN = "pretrain"  # the kernel W is trained on one modality
    BANK = "bank"  # W frozen, the modality banks are trained


@dataclass(frozen=True)
class SynthesisStatus:
    """A synthesis run's phase at ``round`` (the running round, else the last done; None
    before the first), its pre-training rounds (None: unknown, no plan) and each site's
    modality set (None: it has not joined yet)."""

    phase: SynthPhase | None
    round: int | None
    pretrain_rounds: int | None
    modalities: dict[str, tuple[str, ...] | None]


def pretrain_rounds(plan: PlanConfig | None) -> int | None:
    """Rounds 1..P pre-train the kernel (plan ``synthesis.pretrain.rounds``; 0 with an
    ``initial_generator``, whose kernel is taken as it is)."""
    if plan is None:
        return None
    return 0 if plan.synthesis.initial_generator else plan.synthesis.pretrain.rounds


def round_phase(rnd: int, store: RunStore, pretrain: int | None) -> SynthPhase | None:
    """What round ``rnd`` is: what its site rows say (``extra.phase``), else ``pretrain``
    for rounds ``<= P``, else ``bank``; None when neither is known."""
    for r in store.site_rounds():
        said = (r.extra or {}).get("phase") if r.round == rnd else None
        if said in (SynthPhase.PRETRAIN, SynthPhase.BANK):
            return SynthPhase(said)
    if pretrain is None:
        return None
    return SynthPhase.PRETRAIN if rnd <= pretrain else SynthPhase.BANK


def site_modalities(store: RunStore, sites: list[str]) -> dict[str, tuple[str, ...] | None]:
    """Each site's declared modality set (all four for a site that named none)."""
    declared = store.meta.declared()
    out: dict[str, tuple[str, ...] | None] = {}
    for s in sites:
        said = declared[s].modalities if s in declared else None
        has = MODALITIES if said is None else said
        out[s] = tuple(m for m in MODALITIES if m in has) if s in declared else None
    return out


def modality_text(mods: tuple[str, ...] | None) -> str:
    """``all``, ``t1 t1ce t2`` (the ones it has), or ``-`` (not joined)."""
    if mods is None:
        return "-"
    return "all" if set(mods) >= set(MODALITIES) else " ".join(mods) or "none"


@dataclass(frozen=True)
class StatusView:
    """Everything ``fedseg status`` shows."""

    run: str
    state: RunState
    rounds_done: int
    rounds_planned: int | None
    running_round: int | None
    phase: str | None
    error: str | None
    sites: list[SiteStatus]
    federation_scores: dict[str, float]  # group -> the federation's score (pooled)
    federation_model_round: int | None
    alarms: list[AlarmSpan]
    last_events: list[tuple[float, str, str]] = field(default_factory=list)
    cause: FailureCause | None = None  # why it failed or crashed, when known
    models_kept: list[int] = field(default_factory=list)  # model rounds on disk
    models_deleted: list[int] = field(default_factory=list)  # by the plan's retention
    privacy: PrivacyStatus | None = None  # mechanisms on and ε spent (None: none)
    score: ScoreSpec = SEGMENTATION_SCORE  # what the scores are (Dice per region, SSIM ...)
    synthesis: SynthesisStatus | None = None  # a synthesis run's phase and modality sets
    observations: list[AlarmSpan] = field(default_factory=list)  # shown, never notified
    plateau: PlateauStop | None = None  # training stopped early: the curve had plateaued

    def to_json(self) -> dict[str, Any]:
        """The view as plain JSON data (``fedseg status --json``, the dashboard): nested
        records as objects (an event as ``{time, level, message}``), enums as their values,
        a missing or NaN number as null."""
        out = plain(self)
        assert isinstance(out, dict)
        out["last_events"] = [
            {"time": t, "level": level, "message": m} for t, level, m in out["last_events"]
        ]
        return out


def plain(v: Any) -> Any:
    """``v`` as JSON data: dataclasses and pydantic models as objects (field order), enums
    as values, tuples as lists, NaN and infinities as None, mapping keys as text."""
    if isinstance(v, BaseModel):
        return plain(v.model_dump())
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, Enum):
        return plain(v.value)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [plain(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, str | int | bool):
        return v
    return str(v)  # a path


def crash_cause(run: Path, store: RunStore, lock: LockState) -> FailureCause:
    """Why a run whose writer is gone stopped: the recorded cause, else what the folder
    says now (full or unwritable), else the writer's disappearance (or hang)."""
    recorded = store.meta.cause()
    if recorded is not None:
        return recorded
    found = folder_problem(run, store.meta.round_bytes() or 0, probe=False)
    if found is not None:
        return found
    who = lock.holder.describe() if lock.holder is not None else "its writer"
    age = f"{lock.heartbeat_age_s:.0f} s ago" if lock.heartbeat_age_s is not None else "unknown"
    if lock.hung:
        return FailureCause.now(
            CauseKind.HUNG,
            f"{who} holds the run but its last heartbeat was {age}: it hangs; stop it, then "
            f"`fedseg resume {run}`",
        )
    return FailureCause.now(
        CauseKind.WRITER_GONE,
        f"{who} is gone without a word (killed?), last heartbeat {age}; continue with "
        f"`fedseg resume {run}`",
    )


def alarm_spans(alarms: list[Alarm]) -> list[AlarmSpan]:
    """Group stored alarms by (site, kind, level) into first/last round spans."""
    spans: dict[tuple[str, str, str], AlarmSpan] = {}
    for a in sorted(alarms, key=lambda a: a.round):
        key = (a.site, a.kind, a.level)
        first = spans[key].first if key in spans else a.round
        spans[key] = AlarmSpan(
            a.site, a.kind, first, a.round, a.message, AlarmLevel(a.level), a.evidence
        )
    return sorted(spans.values(), key=lambda s: (s.site, s.first, s.kind, s.level))


def split_levels(spans: list[AlarmSpan]) -> tuple[list[AlarmSpan], list[AlarmSpan]]:
    """``(alarms, observations)`` of ``spans``."""
    alarms = [sp for sp in spans if sp.level == AlarmLevel.ALARM]
    return alarms, [sp for sp in spans if sp.level != AlarmLevel.ALARM]


def alarm_labels(alarms: list[Alarm]) -> dict[str, str]:
    """``site -> "kind (since round r), ..."`` for a live table's alarm column (alarms;
    a site with observations only says ``obs``, one with both adds it)."""
    out: dict[str, list[str]] = {}
    noted: set[str] = set()
    for s in alarm_spans(alarms):
        if s.level == AlarmLevel.ALARM:
            out.setdefault(s.site, []).append(f"{s.kind} (since round {s.first})")
        else:
            noted.add(s.site)
    for site in noted:
        out.setdefault(site, []).append(OBSERVATION_MARK)
    return {k: ", ".join(v) for k, v in out.items()}


def read_status(run: Path, store: RunStore | None = None) -> StatusView:
    """Collect a run's status from its store (opened read-only unless one is given)."""
    own = store is None
    st = open_run(run) if store is None else store
    try:
        return _collect(Path(run), st)
    finally:
        if own:
            st.close()


def _collect(run: Path, store: RunStore) -> StatusView:
    rounds = store.rounds()
    done = [r["round"] for r in rounds if r["status"] == RoundStatus.DONE]
    running = [r["round"] for r in rounds if r["status"] == RoundStatus.RUNNING]
    failed = [r["round"] for r in rounds if r["status"] == RoundStatus.FAILED]
    plan = read_run_plan(run)
    planned = planned_rounds(plan, store)
    meta_status = store.meta.status()  # the federation's own word, when it writes one
    live = store.meta.live()
    live_sites: dict[str, str] = dict(live.sites) if live is not None else {}
    lock = probe_lock(run)
    says_running = meta_status in (RunStatus.RUNNING, RunStatus.STARTING)
    if meta_status == RunStatus.CRASHED or (
        says_running and lock.exists and (not lock.held or lock.hung)
    ):
        state = RunState.CRASHED
    elif meta_status == RunStatus.FAILED or (failed and (not done or max(failed) > max(done))):
        state = RunState.FAILED
    elif running or meta_status == RunStatus.RUNNING:
        state = RunState.RUNNING
    elif not rounds:
        state = RunState.NOT_STARTED
    elif planned is not None and len(done) < planned:
        state = RunState.STOPPED
    else:
        state = RunState.DONE
    spec = store_score_spec(store)
    curves = {g: site_curves(store, g) for g in spec.all_groups}
    spans, noted = split_levels(alarm_spans(store.alarms(observations=True)))
    last_rows: dict[str, Any] = {}
    computes: dict[str, ComputeUsed] = {}
    for r in store.site_rounds():
        if r.status == SiteRoundStatus.NOT_ASKED:  # shows the last task it was given
            continue
        last_rows[r.site] = r  # ordered by round: keeps the latest
        if r.compute is not None:  # a failed round says none: the last one that did
            computes[r.site] = r.compute
    plan_sites = plan.site_names if plan is not None else []
    names = sorted(set(store.sites()) | set(plan_sites) | set(live_sites))
    sites = []
    for site in names:
        r = last_rows.get(site)
        mr = max(curves["mean"].get(site, {}) or [-1])
        scores = {
            g: curves[g][site][mr].mean for g in spec.all_groups if mr in curves[g].get(site, {})
        }
        sites.append(SiteStatus(
            site, r.round if r else None, r.status if r else "-", r.n_train if r else None,
            r.n_val if r else None, r.train_loss if r else None,
            r.update_distance if r else None, r.wall_s if r else None,
            mr if mr >= 0 else None, scores,
            [s.kind for s in spans if s.site == site],
            live_sites.get(site) if state == RunState.RUNNING else None,
            computes.get(site), r.error if r else None,
            list(dict.fromkeys(s.kind for s in noted if s.site == site)),
        ))  # fmt: skip
    fed_scores: dict[str, float] = {}
    fed_mr = None
    excused = excused_sites(store)
    fed_mean = federation_curve(curves["mean"], excused=excused)
    if fed_mean:
        fed_mr = max(fed_mean)
        for g in spec.all_groups:
            fc = federation_curve(curves[g], excused=excused)
            if fed_mr in fc:
                fed_scores[g] = fc[fed_mr].mean
    synthesis = None
    if spec.task == Task.SYNTHESIS:
        at = max(running) if running else max(done) if done else None
        pre = pretrain_rounds(plan)
        synthesis = SynthesisStatus(
            round_phase(at, store, pre) if at is not None else None,
            at,
            pre,
            site_modalities(store, names),
        )
    return StatusView(
        run=str(run),
        state=state,
        rounds_done=len(done),
        rounds_planned=planned,
        running_round=max(running) if running else None,
        phase=live.phase if state == RunState.RUNNING and live is not None else None,
        error=store.meta.error() if state == RunState.FAILED else None,
        cause=(
            crash_cause(run, store, lock)
            if state == RunState.CRASHED
            else store.meta.cause()
            if state == RunState.FAILED
            else None
        ),
        sites=sites,
        federation_scores=fed_scores,
        federation_model_round=fed_mr,
        alarms=spans,
        observations=noted,
        last_events=store.events()[-5:],
        models_kept=sorted(store.checkpoints()),
        models_deleted=deleted_model_rounds(store),
        privacy=privacy_status(plan, store),
        plateau=store.meta.plateau(),
        score=spec,
        synthesis=synthesis,
    )


_f = number  # a value in a cell: "0.766", or "-" for none


def _rounds(rounds: list[int], most: int = 12) -> str:
    """``0, 25, 50`` (the first and last few of a long list around an ellipsis)."""
    if len(rounds) > most:
        return (
            ", ".join(map(str, rounds[: most // 2]))
            + ", ..., "
            + ", ".join(map(str, rounds[-most // 2 :]))
        )
    return ", ".join(map(str, rounds))


_STATE_STYLE = {RunState.DONE: "green", RunState.FAILED: "red", RunState.CRASHED: "bold red"}


def render_status(s: StatusView, layout: Layout | None = None) -> Fitted:
    """Rich renderable for a terminal: header lines, the site table(s) (or one line per
    site), each site's failure, the alarms; drawn in the layout for the width it is drawn
    at (``tracking.status_layout``), or in ``layout`` when given."""
    return Fitted(lambda lay: _status_parts(s, lay), layout)


def _status_parts(s: StatusView, lay: Layout) -> list[Any]:
    if s.synthesis is not None:
        tables = _synthesis_tables(s, lay)
    elif lay == Layout.WIDE:
        tables = [_sites_table(s)]
    elif lay == Layout.COMPACT:
        tables = [_compact_sites_table(s)]
    else:
        tables = [_site_line(s, x) for x in s.sites]
    parts: list[Any] = [_header(s), *tables]
    for x in s.sites:  # why a site's latest round failed: its own one line
        if x.error:
            parts.append(Text(f"{x.site} round {x.last_round}: {x.error}", style="red"))
    if not s.alarms:
        parts.append(Text("no alarms"))
    elif lay == Layout.LINES:
        parts.append(Text("alarms", style="bold"))
        parts.extend(_alarm_line(sp) for sp in s.alarms)
    else:
        parts.append(_alarms_table(s.alarms, lay))
    if s.observations:
        parts.append(observations_line(s.observations))
    return parts


#: what heads a run's observations wherever they are listed
OBSERVATIONS_HEADING = "observations (shown, never notified)"


def observations_line(spans: list[AlarmSpan]) -> Text:
    """``observations (shown, never notified): site1 below_federation (round 3-6), ...``."""
    said = ", ".join(f"{sp.site} {sp.kind} (round {_span_rounds(sp)})" for sp in spans)
    return Text.assemble((OBSERVATIONS_HEADING + ": ", "bold"), said)


def _header(s: StatusView) -> Text:
    planned = f"/{s.rounds_planned}" if s.rounds_planned is not None else ""
    head = Text.assemble(
        ("run ", "bold"),
        s.run,
        "  ",
        ("state ", "bold"),
        (s.state, _STATE_STYLE.get(s.state, "yellow")),
        "  ",
        ("rounds done ", "bold"),
        f"{s.rounds_done}{planned}",
        (
            f"  (round {s.running_round} "
            f"{'running' if s.state == RunState.RUNNING else 'unfinished'})"
            if s.running_round
            else ""
        ),
        (f"  phase: {s.phase}" if s.phase else ""),
        (
            f"  (stopped early: no gain since model {s.plateau.best_round}; at most "
            f"{s.plateau.cap})"
            if s.plateau is not None
            else ""
        ),
    )
    if s.cause is not None:
        head.append(f"\n{s.cause.kind}: {s.cause.message}", style="red")
    elif s.error:
        head.append(f"\nerror: {s.error}", style="red")  # fmt: skip
    if s.federation_scores and s.synthesis is not None:  # per modality: in its table
        head.append(
            f"\nfederation {s.score.label} of model {s.federation_model_round}: "
            f"{_f(s.federation_scores.get('mean'))} (mean of the sites' modalities)"
        )
    elif s.federation_scores:
        head.append(f"\nfederation {s.score.label} of model {s.federation_model_round}: ")
        head.append("  ".join(f"{g} {_f(s.federation_scores.get(g))}" for g in s.score.all_groups))
    if s.synthesis is not None:
        head.append("\n" + phase_line(s.synthesis))
    if s.privacy is not None:
        head.append("\nprivacy: " + ("; ".join(s.privacy.mechanisms) or "none in the plan"))
        line = spent_line(s.privacy)
        if line is not None:
            head.append("\n" + line)
    if s.models_deleted:
        head.append(
            f"\nmodels on disk: rounds {_rounds(s.models_kept)} ({len(s.models_deleted)} "
            "deleted by the plan's retention; best.pt and `fedseg select` choose among these)"
        )
    return head


def phase_line(x: SynthesisStatus) -> str:
    """``synthesis phase: bank (round 5; pre-training rounds 1-2)``."""
    p = x.pretrain_rounds
    pre = (
        "pre-training rounds unknown" if p is None
        else "no pre-training" if p == 0
        else "pre-training round 1" if p == 1
        else f"pre-training rounds 1-{p}"
    )  # fmt: skip
    if x.round is None:
        return f"synthesis phase: not started ({pre})"
    return f"synthesis phase: {x.phase or '?'} (round {x.round}; {pre})"


def _alarm_text(x: SiteStatus, lay: Layout = Layout.WIDE) -> Text:
    """A site's alarm kinds (short ones in a narrow layout) and ``obs`` for observations."""
    if lay != Layout.WIDE:
        said = short_alarms(x.alarms, x.observations)
    else:
        said = ", ".join([*x.alarms, *([OBSERVATION_MARK] if x.observations else [])]) or "-"
    return Text(said, style="bold red" if x.alarms else "")


def _span_rounds(sp: AlarmSpan) -> str:
    return f"{sp.first}" if sp.first == sp.last else f"{sp.first}-{sp.last}"


def _alarms_table(spans: list[AlarmSpan], lay: Layout) -> Table:
    """Site, kind, rounds and message of each alarm; in the compact layout only the message
    wraps (site and kind are never cut)."""
    if lay == Layout.WIDE:
        a = Table(title="alarms", title_justify="left")
        for col in ("site", "kind", "rounds", "message"):
            a.add_column(col)
    else:
        a = narrow_table("alarms", [("site", False), ("kind", False), ("rounds", False)])
        a.add_column("message", overflow="fold")
    for sp in spans:
        a.add_row(sp.site, Text(sp.kind, style="red"), _span_rounds(sp), sp.message)
    return a


def _alarm_line(sp: AlarmSpan) -> Text:
    """``site1 below_federation (rounds 6-8): message`` (the lines layout)."""
    return Text.assemble(
        sp.site, " ", (sp.kind, "red"), f" (round {_span_rounds(sp)}): ", sp.message
    )


def _state_word(x: SiteStatus) -> str:
    """What the site does now (a running run), else its last round's status."""
    return x.live or x.status


def _sites_table(s: StatusView) -> Table:
    """A segmentation run's wide site table: state, cases, loss, update, Dice per region,
    device and precision (every column ``no_wrap``: drawn only where it fits, or asked)."""
    label = s.score.label
    t = Table(title="sites", title_justify="left")
    for col in ("site", "now", "round", "state", "train", "val", "loss", "update dist", "s/round",
                "model", *(f"{label} {g}" for g in s.score.groups), f"{label} mean", "device",
                "precision", "alarms"):  # fmt: skip
        left = ("site", "now", "state", "device", "precision", "alarms")
        t.add_column(col, justify="left" if col in left else "right", no_wrap=True)
    for x in s.sites:
        t.add_row(
            x.site, x.live or "-", _f(x.last_round, "d"), x.status, _f(x.n_train, "d"),
            _f(x.n_val, "d"), _f(x.train_loss, ".4f"), _f(x.update_distance, ".4g"),
            _f(x.wall_s, ".1f"),
            _f(x.model_round, "d"), *(_f(x.scores.get(g)) for g in s.score.all_groups),
            x.compute.device if x.compute else "-", x.compute.precision if x.compute else "-",
            _alarm_text(x),
        )  # fmt: skip
    return t


def _cases(x: SiteStatus) -> str:
    """``30/8``: training and validation cases."""
    return f"{_f(x.n_train, 'd')}/{_f(x.n_val, 'd')}"


def _compact_sites_table(s: StatusView) -> Table:
    """A segmentation run's compact site table (about 70 columns): state, round, cases
    train/val, mean Dice, Dice per region in one cell, short alarm kinds."""
    label, groups = s.score.label, s.score.groups
    t = narrow_table("sites", [
        ("site", False), ("state", False), ("round", True), ("cases", True),
        (label, True), (scores_header(groups), False), ("alarms", False),
    ])  # fmt: skip
    for x in s.sites:
        t.add_row(
            x.site, _state_word(x), _f(x.last_round, "d"), _cases(x),
            _f(x.scores.get("mean")), scores_cell(x.scores, groups),
            _alarm_text(x, Layout.COMPACT),
        )  # fmt: skip
    return t


def _site_line(s: StatusView, x: SiteStatus, mods: tuple[str, ...] | None = None) -> Text:
    """One site on one line: ``site1  ok r6  Dice 0.766 (ET 0.94 TC 0.72 WT 0.64)  30/8
    cases  below`` (a synthesis run: its modalities, absent ones said so)."""
    groups = " ".join(
        f"{g} {_f(x.scores.get(g), '.2f') if mods is None or g in mods else 'absent'}"
        for g in s.score.groups
    )
    line = Text.assemble(
        (x.site, "bold"),
        f"  {_state_word(x)} r{_f(x.last_round, 'd')}  {s.score.label} "
        f"{_f(x.scores.get('mean'))} ({groups})  {_cases(x)} cases  ",
    )
    line.append_text(_alarm_text(x, Layout.LINES))
    return line


def _synthesis_tables(s: StatusView, lay: Layout) -> list[Any]:
    """A synthesis run's site table (state, modality set, mean SSIM) and its SSIM per
    modality of each site's latest validated model; in the lines layout, one line per site
    and one for the federation."""
    assert s.synthesis is not None
    mods = s.synthesis.modalities
    label = s.score.label
    if lay == Layout.LINES:
        lines: list[Any] = []
        for x in s.sites:
            have = mods.get(x.site)
            line = _site_line(s, x, have)
            line.append(f"  modalities {modality_text(have)}")
            lines.append(line)
        if s.federation_scores:
            fed = " ".join(f"{g} {_f(s.federation_scores.get(g), '.2f')}" for g in s.score.groups)
            lines.append(Text(
                f"federation  model {_f(s.federation_model_round, 'd')}  {label} "
                f"{_f(s.federation_scores.get('mean'))} ({fed})", style="bold",
            ))  # fmt: skip
        return lines
    if lay == Layout.WIDE:
        t = Table(title="sites", title_justify="left")
        for col in ("site", "now", "round", "state", "modalities", "val", "loss", label,
                    "alarms"):  # fmt: skip
            left = ("site", "now", "state", "modalities", "alarms")
            t.add_column(col, justify="left" if col in left else "right", no_wrap=True)
        for x in s.sites:
            t.add_row(
                x.site, x.live or "-", _f(x.last_round, "d"), x.status,
                modality_text(mods.get(x.site)), _f(x.n_val, "d"), _f(x.train_loss, ".4f"),
                _f(x.scores.get("mean")), _alarm_text(x),
            )  # fmt: skip
        per = Table(title=f"{label} per modality (each site's latest validated model)",
                    title_justify="left")  # fmt: skip
    else:
        t = narrow_table("sites", [
            ("site", False), ("state", False), ("round", True), ("modalities", False),
            ("cases", True), (label, True), ("alarms", False),
        ])  # fmt: skip
        for x in s.sites:
            t.add_row(
                x.site, _state_word(x), _f(x.last_round, "d"), modality_text(mods.get(x.site)),
                _cases(x), _f(x.scores.get("mean")), _alarm_text(x, lay),
            )  # fmt: skip
        per = narrow_table(f"{label} per modality, latest validated model", [])
    for col in ("site", "model", *s.score.all_groups):
        per.add_column(col, justify="left" if col == "site" else "right", no_wrap=True)
    for x in s.sites:
        have = mods.get(x.site)
        per.add_row(
            x.site, _f(x.model_round, "d"),
            *(_f(x.scores.get(g)) if have is None or g in have or g == "mean" else "absent"
              for g in s.score.all_groups),
        )  # fmt: skip
    if s.federation_scores:
        per.add_row(
            "federation", _f(s.federation_model_round, "d"),
            *(_f(s.federation_scores.get(g)) for g in s.score.all_groups), style="bold",
        )  # fmt: skip
    return [t, per]
