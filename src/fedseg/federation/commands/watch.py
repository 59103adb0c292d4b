"""Follow a running federation from its run store until it ends.

:func:`watch` reads the store once a second: the live table (:func:`live_table`: each site's
state, last validation score per region or modality, training cases, alarms, in the layout
that fits the terminal: ``tracking.status_layout``) or, without
it, one line per finished round; it returns when the ServerApp says ``done`` and raises a one-line
FedsegError when it says ``failed``, never started, or died (:class:`AggregatorDied`; then
``fedseg resume`` continues the run). A
SuperLink that stops is fatal; a site process that exits is reported once (the round loop
decides what a missing site means).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fedseg.errors import FedsegError
from fedseg.federation.engine.launcher import Launcher
from fedseg.plan import PlanConfig
from fedseg.run_folder import AlarmLevel, RunStatus, SiteActivity, SiteRoundStatus
from fedseg.tracking.curves import ScoreSpec, store_score_spec
from fedseg.tracking.status import alarm_labels
from fedseg.tracking.status_layout import (
    Fitted,
    Layout,
    narrow_table,
    number,
    scores_cell,
    scores_header,
    short_alarms,
)
from fedseg.tracking.store import Alarm, RunStore

#: How long the ServerApp may take to start and say its pid.
AGGREGATOR_START_S = 240.0


class AggregatorDied(FedsegError):
    """The ServerApp process vanished without recording how the run ended."""


def watch(run_dir: Path, plan: PlanConfig, launcher: Launcher, console: Console,
           live: bool) -> None:  # fmt: skip
    """Follow the run store until the ServerApp says done or failed, or dies."""
    started = time.monotonic()
    reported = 0
    warned: set[str] = set()
    view = Live(console=console, refresh_per_second=2, transient=False) if live else None
    if view is not None:
        view.start()
    try:
        while True:
            with RunStore(run_dir) as store:
                status = store.meta.status()
                pid = store.meta.aggregator_pid()
                if view is not None:
                    view.update(live_table(store, plan))
                error = store.meta.error()
                last = store.last_done_round()
                if view is None and last > reported:
                    planned = store.meta.planned_rounds() or plan.rounds
                    for r in store.rounds():
                        if reported < r["round"] <= last:
                            console.print(
                                f"round {r['round']}/{planned} done: "
                                f"{r['n_sites']} site updates, {r['wall_s']:.0f} s"
                            )
                    reported = last
            if status == RunStatus.DONE:
                return
            if status == RunStatus.FAILED:
                raise FedsegError(f"the federation failed: {error}")
            if pid is None and time.monotonic() - started > AGGREGATOR_START_S:
                raise FedsegError(
                    f"the aggregator (ServerApp) did not start within {AGGREGATOR_START_S:.0f} s;"
                    f" see {launcher.logs}"
                )
            if pid is not None and not _pid_alive(pid):
                with RunStore(run_dir) as store:  # it may have said its last word just now
                    status, error = store.meta.status(), store.meta.error()
                if status == RunStatus.DONE:
                    return
                if status == RunStatus.FAILED:
                    raise FedsegError(f"the federation failed: {error}")
                raise AggregatorDied(
                    f"the aggregator (pid {pid}) died without a word after round {last} "
                    f"(killed, or out of memory?); continue the run with `fedseg resume "
                    f"{run_dir}`"
                )
            for p in launcher.dead():
                if p.role == "superlink":
                    raise FedsegError(f"the SuperLink stopped: {p.tail(3)} (log: {p.log})")
                if p.role not in warned:
                    warned.add(p.role)
                    console.print(f"[yellow]{p.role} process exited:[/] {p.tail(2)} (log: {p.log})")
            time.sleep(1.0)
    finally:
        if view is not None:
            view.stop()


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


STATE_STYLE: dict[str, str] = {
    SiteActivity.DONE: "green",
    SiteRoundStatus.OK: "green",
    SiteActivity.FAILED: "red",
    SiteActivity.TIMEOUT: "red",
    SiteRoundStatus.REJECTED: "red",
    SiteActivity.TRAINING: "yellow",
    SiteActivity.VALIDATING: "yellow",
    SiteActivity.WAITING: "dim",
    SiteRoundStatus.NOT_ASKED: "dim",
}


def live_table(store: RunStore, plan: PlanConfig, layout: Layout | None = None) -> Fitted:
    """Round, each site's state, its last validation score per group (Dice ET/TC/WT; a
    synthesis run's SSIM per modality: ``tracking.curves.ScoreSpec``), training cases, loss
    and alarms; drawn in the layout for the width it gets (``tracking.status_layout``: a
    column per score from 120 columns, the scores in one cell from 60, else one line per
    site), or in ``layout`` when given."""
    live = store.meta.live()
    rnd, phase = (live.round, str(live.phase)) if live is not None else (0, "starting")
    best = store.meta.best()
    spec = store_score_spec(store)
    title = f"round {rnd}/{store.meta.planned_rounds() or plan.rounds} - {phase}"
    if best is not None:
        title += f" - best: model {best.model_round}, {spec.label} {best.score:.3f}"
    alarms = store.alarms(observations=True)
    last_rows = {}
    for sr in store.site_rounds():
        if sr.status != SiteRoundStatus.NOT_ASKED:  # the last task it was given
            last_rows[sr.site] = sr
    vals: dict[str, dict[str, tuple[int, float]]] = {}
    for v in store.validation(metric=spec.metric):
        vals.setdefault(v.site, {})[v.region] = (v.model_round, v.mean)
    rows = []
    for site in plan.site_names:
        state = live.sites.get(site, SiteActivity.WAITING) if live else SiteActivity.WAITING
        v = vals.get(site, {})
        sr = last_rows.get(site)
        rows.append(_LiveRow(
            site, state, max((m for m, _ in v.values()), default=None),
            {g: v[g][1] for g in spec.groups if g in v},
            sr.n_train if sr else None, sr.train_loss if sr else None,
        ))  # fmt: skip
    return Fitted(lambda lay: _live_parts(title, spec, rows, alarms, lay), layout)


@dataclass(frozen=True)
class _LiveRow:
    site: str
    state: str
    model: int | None
    scores: dict[str, float]
    n_train: int | None
    loss: float | None


def _live_parts(
    title: str, spec: ScoreSpec, rows: list[_LiveRow], alarms: list[Alarm], lay: Layout
) -> list[RenderableType]:
    def state(r: _LiveRow) -> str:
        return f"[{STATE_STYLE.get(r.state, 'white')}]{r.state}[/]"

    labels = alarm_labels(alarms)  # full kinds: where a line may wrap
    if lay == Layout.LINES:
        lines: list[RenderableType] = [Text(title, style="italic")]
        for r in rows:
            groups = " ".join(f"{g} {number(r.scores.get(g), '.2f')}" for g in spec.groups)
            lines.append(Text.from_markup(
                f"[bold]{r.site}[/]  {state(r)}  model {number(r.model, 'd')}  {spec.label} "
                f"{groups}  {number(r.n_train, 'd')} cases  loss {number(r.loss)}  "
                + (f"[red]{labels[r.site]}[/]" if r.site in labels else "-")
            ))  # fmt: skip
        return lines
    if lay == Layout.WIDE:
        table = Table(title=title, title_justify="left")
        scores = tuple(f"{spec.label} {g}" for g in spec.groups)
        cols = ("site", "state", "model", *scores, "train cases", "loss")
        for col in (*cols, "alarms"):
            table.add_column(col, justify="right" if col in cols[2:] else "left", no_wrap=True)
        for r in rows:
            table.add_row(
                r.site, state(r), number(r.model, "d"),
                *[number(r.scores.get(g)) for g in spec.groups],
                number(r.n_train, "d"), number(r.loss),
                f"[red]{labels[r.site]}[/]" if r.site in labels else "-",
            )  # fmt: skip
        return [table]
    kinds: dict[str, list[str]] = {}
    noted: dict[str, list[str]] = {}
    for a in alarms:
        (kinds if a.level == AlarmLevel.ALARM else noted).setdefault(a.site, []).append(a.kind)
    table = narrow_table(title, [
        ("site", False), ("state", False), ("model", True),
        (f"{spec.label}\n{scores_header(spec.groups)}", False), ("cases", True),
        ("loss", True), ("alarms", False),
    ])  # fmt: skip
    for r in rows:
        table.add_row(
            r.site, state(r), number(r.model, "d"), scores_cell(r.scores, spec.groups),
            number(r.n_train, "d"), number(r.loss),
            f"[red]{short_alarms(kinds[r.site], noted.get(r.site, []))}[/]"
            if r.site in kinds
            else short_alarms([], noted.get(r.site, [])),
        )  # fmt: skip
    return [table]
