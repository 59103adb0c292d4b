"""``fedseg simulate``: the whole federation on one machine, through the deployment engine.

One SuperLink and one SuperNode per site run as real processes on loopback, exactly as in
a deployment (same ServerApp, ClientApp and messages); only the addresses and the
security (plain HTTP, loopback only) differ. The ServerApp writes the run store; this
module starts the processes, submits the run, shows a live table read from the store, and
stops everything at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fedseg.errors import FedsegError
from fedseg.federation.commands.run_folder import prepare_run
from fedseg.federation.engine.app_bundle import run_config, write_app
from fedseg.federation.engine.client_app import NODE_DATA_DIR, NODE_SITE_NAME
from fedseg.federation.engine.launcher import Launcher, Security
from fedseg.plan import PlanConfig, load_plan
from fedseg.run_folder import BEST_MODEL, PLAN_FILE, RunStatus, SiteActivity, SiteRoundStatus
from fedseg.tracking.status import alarm_labels
from fedseg.tracking.store import RunStore

#: How long the ServerApp may take to start and say its pid.
AGGREGATOR_START_S = 240.0


@dataclass(frozen=True)
class SimulationResult:
    run_dir: Path
    rounds_done: int
    best_model: Path | None
    best_score: float | None
    wall_s: float


def run_simulation(
    run_dir: Path,
    *,
    console: Console | None = None,
    live: bool = True,
    threads_per_site: int = 1,
    security: Security | None = None,
) -> SimulationResult:
    """Start the engine for the run folder, run (or continue) the federation, stop."""
    run_dir = Path(run_dir).resolve()
    plan = load_plan(run_dir / PLAN_FILE)
    console = console or Console(stderr=True)
    t0 = time.monotonic()
    with RunStore(run_dir) as store:
        run_id = store.meta.run_id() or run_dir.name
        store.meta.set_aggregator_pid(None)
        store.meta.set_status(RunStatus.STARTING)
        store.meta.set_live(None)
    launcher = Launcher(run_dir, security)
    launcher.kill_leftovers()
    app = write_app(run_dir)
    try:
        with console.status("starting the SuperLink and the sites"):
            launcher.start_superlink()
            for name, site in plan.sites.items():
                launcher.start_site(name, {NODE_SITE_NAME: name, NODE_DATA_DIR: str(site.data),
                                           "threads": threads_per_site})  # fmt: skip
            flower_run = launcher.submit(app, run_config(run_dir, run_id))
        with RunStore(run_dir) as store:
            store.meta.set_flower_run_id(flower_run)
            store.log(f"Flower run {flower_run} submitted")
        watch(run_dir, plan, launcher, console, live)
    finally:
        launcher.stop()
    return result_of(run_dir, t0)


def result_of(run_dir: Path, t0: float) -> SimulationResult:
    """What a finished (or stopped) run folder holds; ``t0`` is its ``time.monotonic()`` start."""
    with RunStore(run_dir) as store:
        best = store.meta.best()
        done = store.last_done_round()
    best_path = run_dir / BEST_MODEL
    return SimulationResult(
        run_dir=run_dir,
        rounds_done=done,
        best_model=best_path if best_path.is_file() else None,
        best_score=best.score if best is not None else None,
        wall_s=time.monotonic() - t0,
    )


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
                raise FedsegError(
                    f"the aggregator (pid {pid}) stopped after round {last}; continue the run "
                    f"with `fedseg resume {run_dir}`"
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
}


def live_table(store: RunStore, plan: PlanConfig) -> Table:
    """Round, each site's state, its last validation Dice ET/TC/WT and training cases."""
    live = store.meta.live()
    rnd, phase = (live.round, str(live.phase)) if live is not None else (0, "starting")
    best = store.meta.best()
    title = f"round {rnd}/{store.meta.planned_rounds() or plan.rounds} - {phase}"
    if best is not None:
        title += f" - best: model {best.model_round}, Dice {best.score:.3f}"
    table = Table(title=title, title_justify="left")
    cols = ("site", "state", "model", "Dice ET", "Dice TC", "Dice WT", "train cases", "loss")
    for col in (*cols, "alarms"):
        table.add_column(col, justify="right" if col in cols[2:] else "left")
    alarms = alarm_labels(store.alarms())
    last_rows = {}
    for sr in store.site_rounds():
        last_rows[sr.site] = sr
    vals: dict[str, dict[str, tuple[int, float]]] = {}
    for v in store.validation(metric="dice"):
        vals.setdefault(v.site, {})[v.region] = (v.model_round, v.mean)
    for site in plan.site_names:
        state = live.sites.get(site, SiteActivity.WAITING) if live else SiteActivity.WAITING
        v = vals.get(site, {})
        model = max((m for m, _ in v.values()), default=None)
        sr = last_rows.get(site)
        table.add_row(
            site,
            f"[{STATE_STYLE.get(state, 'white')}]{state}[/]",
            "-" if model is None else str(model),
            *[f"{v[r][1]:.3f}" if r in v else "-" for r in ("ET", "TC", "WT")],
            str(sr.n_train) if sr and sr.n_train is not None else "-",
            f"{sr.train_loss:.3f}" if sr and sr.train_loss is not None else "-",
            f"[red]{alarms[site]}[/]" if site in alarms else "-",
        )
    return table


def simulate(plan_path: Path, out: Path, **kwargs: object) -> SimulationResult:
    """``fedseg simulate PLAN --out RUN``: a new run folder, then the federation."""
    prepare_run(plan_path, out)
    return run_simulation(out, **kwargs)  # type: ignore[arg-type]
