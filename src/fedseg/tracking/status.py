"""The coordinator's live view of a run: rounds, each site's state and metrics, alarms.

``read_status`` opens the run store read-only (safe while the federation writes: WAL),
``render_status`` turns the result into rich tables for ``fedseg status``, and
``alarm_labels`` gives the short per-site alarm text the federation's live table shows.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Group
from rich.table import Table
from rich.text import Text

from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.tracking.curves import ALL_REGIONS, federation_curve, site_curves
from fedseg.tracking.store import Alarm, RunStore

PLAN_FILE = "plan.yaml"


class ReadOnlyRunStore(RunStore):
    """A ``RunStore`` opened with SQLite's read-only mode: never writes, never creates."""

    def __init__(self, path: Path) -> None:
        given = Path(path)
        path = given / self.FILENAME if given.is_dir() else given
        if not path.is_file():
            raise FedsegError(
                f"{given}: no run store ({self.FILENAME}); give a run folder written by "
                "`fedseg simulate` or `fedseg federate`"
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


def read_plan(run: Path) -> dict[str, Any]:
    """The plan recorded in the run folder as plain YAML data ({} when absent)."""
    path = Path(run) / PLAN_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FedsegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def planned_rounds(plan: dict[str, Any], store: RunStore) -> int | None:
    """Number of rounds the plan asks for, from the store's meta or the plan, if stated."""
    for v in (store.get_meta("rounds"), store.get_meta("num_rounds"), plan.get("rounds"),
              plan.get("num_rounds")):  # fmt: skip
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


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


@dataclass(frozen=True)
class AlarmSpan:
    """An alarm kind at a site: first and last round it held, latest message."""

    site: str
    kind: str
    first: int
    last: int
    message: str


@dataclass(frozen=True)
class RunStatus:
    """Everything ``fedseg status`` shows."""

    run: str
    state: str
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


def read_status(run: Path, store: RunStore | None = None) -> RunStatus:
    """Collect a run's status from its store (opened read-only unless one is given)."""
    own = store is None
    st = open_run(run) if store is None else store
    try:
        return _collect(Path(run), st)
    finally:
        if own:
            st.close()


def _collect(run: Path, store: RunStore) -> RunStatus:
    rounds = store.rounds()
    done = [r["round"] for r in rounds if r["status"] == "done"]
    running = [r["round"] for r in rounds if r["status"] == "running"]
    failed = [r["round"] for r in rounds if r["status"] == "failed"]
    plan = read_plan(run)
    planned = planned_rounds(plan, store)
    meta_status = store.get_meta("status")  # the federation's own word, when it writes one
    live = store.get_meta("live") or {}
    live_sites: dict[str, str] = live.get("sites", {}) if isinstance(live, dict) else {}
    if meta_status == "failed" or (failed and (not done or max(failed) > max(done))):
        state = "failed"
    elif running or meta_status == "running":
        state = "running"
    elif not rounds:
        state = "not started"
    elif planned is not None and len(done) < planned:
        state = "stopped"
    else:
        state = "done"
    curves = {g: site_curves(store, g) for g in ALL_REGIONS}
    alarms = store.alarms()
    spans = alarm_spans(alarms)
    last_rows: dict[str, Any] = {}
    for r in store.site_rounds():
        last_rows[r.site] = r  # ordered by round: keeps the latest
    plan_sites = list(plan.get("sites") or {}) if isinstance(plan.get("sites"), dict) else []
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
            live_sites.get(site) if state == "running" else None,
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
    return RunStatus(
        run=str(run),
        state=state,
        rounds_done=len(done),
        rounds_planned=planned,
        running_round=max(running) if running else None,
        phase=live.get("phase") if state == "running" and isinstance(live, dict) else None,
        error=store.get_meta("error") if state == "failed" else None,
        sites=sites,
        federation_dice=fed_dice,
        federation_model_round=fed_mr,
        alarms=spans,
        last_events=store.events()[-5:],
    )


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render_status(s: RunStatus) -> Group:
    """Rich renderables for a terminal: header line, site table, alarms table."""
    planned = f"/{s.rounds_planned}" if s.rounds_planned is not None else ""
    head = Text.assemble(
        ("run ", "bold"),
        s.run,
        "  ",
        ("state ", "bold"),
        (s.state, "green" if s.state == "done" else "yellow"),
        "  ",
        ("rounds done ", "bold"),
        f"{s.rounds_done}{planned}",
        (
            f"  (round {s.running_round} {'running' if s.state == 'running' else 'unfinished'})"
            if s.running_round
            else ""
        ),
        (f"  phase: {s.phase}" if s.phase else ""),
    )
    if s.error:
        head.append(f"\nerror: {s.error}", style="red")  # fmt: skip
    if s.federation_dice:
        head.append(f"\nfederation Dice of model {s.federation_model_round}: ")
        head.append("  ".join(f"{g} {_f(s.federation_dice.get(g))}" for g in ALL_REGIONS))
    t = Table(title="sites", title_justify="left")
    for col in ("site", "now", "round", "state", "train", "val", "loss", "update dist", "s/round",
                "model", *(f"Dice {g}" for g in REGIONS), "Dice mean", "alarms"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("site", "now", "state", "alarms") else "right")
    for x in s.sites:
        t.add_row(
            x.site, x.live or "-", _f(x.last_round, "d"), x.status, _f(x.n_train, "d"),
            _f(x.n_val, "d"), _f(x.train_loss, ".4f"), _f(x.update_distance, ".4g"),
            _f(x.wall_s, ".1f"),
            _f(x.model_round, "d"), *(_f(x.dice.get(g)) for g in ALL_REGIONS),
            Text(", ".join(x.alarms) or "-", style="bold red" if x.alarms else ""),
        )  # fmt: skip
    parts: list[Any] = [head, t]
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
