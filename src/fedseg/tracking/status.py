"""The coordinator's live view of a run: rounds, each site's state and metrics, alarms.

``read_status`` opens the run store read-only (safe while the federation writes: WAL),
``render_status`` turns the result into rich tables for ``fedseg status``, and
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

The plan is read typed (``fedseg.plan.read_run_plan``; None for a centralized run). The
planned number of rounds is what the coordinator recorded (meta ``planned_rounds``: the
strategy's count, e.g. cycles x sites for a cyclic plan), else the plan's ``rounds``.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.plan import PlanConfig, read_run_plan
from fedseg.privacy.visibility import mechanisms
from fedseg.run_folder import (
    STORE_FILE,
    CauseKind,
    ComputeUsed,
    FailureCause,
    LockState,
    PrivacySpent,
    RoundStatus,
    RunStatus,
    folder_problem,
    probe_lock,
)
from fedseg.tracking.curves import ALL_REGIONS, federation_curve, site_curves
from fedseg.tracking.selection import deleted_model_rounds
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
    dice: dict[str, float]
    alarms: list[str]
    live: str | None = None  # what the site does now (from the federation's live meta)
    compute: ComputeUsed | None = None  # device and precision of its latest recorded round
    error: str | None = None  # the one line its latest round failed (or was rejected) with


@dataclass(frozen=True)
class AlarmSpan:
    """An alarm kind at a site: first and last round it held, latest message."""

    site: str
    kind: str
    first: int
    last: int
    message: str


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
    federation_dice: dict[str, float]
    federation_model_round: int | None
    alarms: list[AlarmSpan]
    last_events: list[tuple[float, str, str]] = field(default_factory=list)
    cause: FailureCause | None = None  # why it failed or crashed, when known
    models_kept: list[int] = field(default_factory=list)  # model rounds on disk
    models_deleted: list[int] = field(default_factory=list)  # by the plan's retention
    privacy: PrivacyStatus | None = None  # mechanisms on and ε spent (None: none)


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
    """Group stored alarms by (site, kind) into first/last round spans."""
    spans: dict[tuple[str, str], AlarmSpan] = {}
    for a in sorted(alarms, key=lambda a: a.round):
        key = (a.site, a.kind)
        first = spans[key].first if key in spans else a.round
        spans[key] = AlarmSpan(a.site, a.kind, first, a.round, a.message)
    return sorted(spans.values(), key=lambda s: (s.site, s.first, s.kind))


def alarm_labels(alarms: list[Alarm]) -> dict[str, str]:
    """``site -> "kind (since round r), ..."`` for a live table's alarm column."""
    out: dict[str, list[str]] = {}
    for s in alarm_spans(alarms):
        out.setdefault(s.site, []).append(f"{s.kind} (since round {s.first})")
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
    curves = {g: site_curves(store, g) for g in ALL_REGIONS}
    alarms = store.alarms()
    spans = alarm_spans(alarms)
    last_rows: dict[str, Any] = {}
    computes: dict[str, ComputeUsed] = {}
    for r in store.site_rounds():
        last_rows[r.site] = r  # ordered by round: keeps the latest
        if r.compute is not None:  # a failed round says none: the last one that did
            computes[r.site] = r.compute
    plan_sites = plan.site_names if plan is not None else []
    names = sorted(set(store.sites()) | set(plan_sites) | set(live_sites))
    sites = []
    for site in names:
        r = last_rows.get(site)
        mr = max(curves["mean"].get(site, {}) or [-1])
        dice = {g: curves[g][site][mr].mean for g in ALL_REGIONS if mr in curves[g].get(site, {})}
        sites.append(SiteStatus(
            site, r.round if r else None, r.status if r else "-", r.n_train if r else None,
            r.n_val if r else None, r.train_loss if r else None,
            r.update_distance if r else None, r.wall_s if r else None,
            mr if mr >= 0 else None, dice,
            [s.kind for s in spans if s.site == site],
            live_sites.get(site) if state == RunState.RUNNING else None,
            computes.get(site), r.error if r else None,
        ))  # fmt: skip
    fed_dice: dict[str, float] = {}
    fed_mr = None
    fed_mean = federation_curve(curves["mean"])
    if fed_mean:
        fed_mr = max(fed_mean)
        for g in ALL_REGIONS:
            fc = federation_curve(curves[g])
            if fed_mr in fc:
                fed_dice[g] = fc[fed_mr].mean
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
        federation_dice=fed_dice,
        federation_model_round=fed_mr,
        alarms=spans,
        last_events=store.events()[-5:],
        models_kept=sorted(store.checkpoints()),
        models_deleted=deleted_model_rounds(store),
        privacy=privacy_status(plan, store),
    )


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


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


def render_status(s: StatusView) -> Group:
    """Rich renderables for a terminal: header line, site table, alarms table."""
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
    )
    if s.cause is not None:
        head.append(f"\n{s.cause.kind}: {s.cause.message}", style="red")
    elif s.error:
        head.append(f"\nerror: {s.error}", style="red")  # fmt: skip
    if s.federation_dice:
        head.append(f"\nfederation Dice of model {s.federation_model_round}: ")
        head.append("  ".join(f"{g} {_f(s.federation_dice.get(g))}" for g in ALL_REGIONS))
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
    t = Table(title="sites", title_justify="left")
    for col in ("site", "now", "round", "state", "train", "val", "loss", "update dist", "s/round",
                "model", *(f"Dice {g}" for g in REGIONS), "Dice mean", "device", "precision",
                "alarms"):  # fmt: skip
        left = ("site", "now", "state", "device", "precision", "alarms")
        t.add_column(col, justify="left" if col in left else "right")
    for x in s.sites:
        t.add_row(
            x.site, x.live or "-", _f(x.last_round, "d"), x.status, _f(x.n_train, "d"),
            _f(x.n_val, "d"), _f(x.train_loss, ".4f"), _f(x.update_distance, ".4g"),
            _f(x.wall_s, ".1f"),
            _f(x.model_round, "d"), *(_f(x.dice.get(g)) for g in ALL_REGIONS),
            x.compute.device if x.compute else "-", x.compute.precision if x.compute else "-",
            Text(", ".join(x.alarms) or "-", style="bold red" if x.alarms else ""),
        )  # fmt: skip
    parts: list[Any] = [head, t]
    for x in s.sites:  # why a site's latest round failed: its own one line
        if x.error:
            parts.append(Text(f"{x.site} round {x.last_round}: {x.error}", style="red"))
    if s.alarms:
        a = Table(title="alarms", title_justify="left")
        for col in ("site", "kind", "rounds", "message"):
            a.add_column(col)
        for sp in s.alarms:
            rounds = f"{sp.first}" if sp.first == sp.last else f"{sp.first}-{sp.last}"
            a.add_row(sp.site, Text(sp.kind, style="red"), rounds, sp.message)
        parts.append(a)
    else:
        parts.append(Text("no alarms"))
    return Group(*parts)
