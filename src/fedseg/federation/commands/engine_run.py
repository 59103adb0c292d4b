"""One federation run over Flower's deployment engine: ``simulate``, ``resume`` and
``server start`` all go through :func:`run_federation`.

1. the run folder: created from a plan file (a new run) or continued (``resume``); the plan
   is read once;
2. the SuperLink, with the security of where the sites are:

   * :class:`LocalSites` (a simulation): plain HTTP on loopback, and one SuperNode per plan
     site started here, reading the plan's data folder;
   * :class:`ServerOptions` (a deployment): TLS with the coordinator's server certificate,
     SuperNode authentication with the enrolled keys only
     (:mod:`fedseg.federation.security.enrollment`), and the Fleet API alone on the
     site-facing address (:mod:`fedseg.federation.engine.fleet_gateway`); the sites start
     their own SuperNodes (``fedseg site start``);

3. ``flwr run`` of the app bundle, recorded in the run store (meta ``flower_run_id`` and an
   event);
4. :func:`~fedseg.federation.commands.watch.watch` until the ServerApp says done or failed;
5. every process stopped, whatever happened; the :class:`RunResult` read from the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation.commands.run_folder import prepare_run
from fedseg.federation.commands.watch import watch
from fedseg.federation.engine.app_bundle import run_config, write_app
from fedseg.federation.engine.client_app import (
    NODE_DATA_DIR,
    NODE_MIN_SUMMARY_CASES,
    NODE_SITE_NAME,
)
from fedseg.federation.engine.fleet_gateway import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_FLEET_PORT,
    FleetGateway,
)
from fedseg.federation.engine.launcher import Launcher
from fedseg.federation.security.enrollment import (
    check_server_creds,
    server_security,
    start_enrolled_superlink,
)
from fedseg.plan import PlanConfig, load_plan
from fedseg.run_folder import BEST_MODEL, PLAN_FILE, RunStatus
from fedseg.tracking.store import RunStore


@dataclass(frozen=True)
class LocalSites:
    """A simulation: one SuperNode per plan site on this machine, plain HTTP on loopback."""

    threads_per_site: int = 1


class ServerOptions(BaseModel):
    """A deployment: where the aggregator's SuperLink listens and what it trusts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    creds: Path = Field(description="coordinator credentials folder (fedseg pki init)")
    fleet_host: str = Field("0.0.0.0", description="site-facing address of the Fleet API")
    fleet_port: int = Field(DEFAULT_FLEET_PORT, ge=1, le=65535)
    control_port: int = Field(
        DEFAULT_CONTROL_PORT, ge=1, le=65535, description="loopback port of every API"
    )


@dataclass(frozen=True)
class RunResult:
    """What a finished (or stopped) federation run left in its folder."""

    run_dir: Path
    rounds_done: int
    best_model: Path | None
    best_score: float | None
    wall_s: float

    def summary(self) -> list[str]:
        """The lines a verb prints at the end: run folder, rounds, time, best model."""
        lines = [f"run folder: {self.run_dir}  ({self.rounds_done} rounds, {self.wall_s:.0f} s)"]
        if self.best_model is not None and self.best_score is not None:
            lines.append(
                f"best model: {self.best_model} (mean validation Dice {self.best_score:.3f})"
            )
        return lines


def aggregator_launcher(run_dir: Path, options: ServerOptions) -> Launcher:
    """The deployment's launcher: TLS and node authentication from ``options.creds``, every
    API on loopback ``control_port``, only the Fleet API on ``fleet_host:fleet_port``."""
    return Launcher(
        run_dir,
        server_security(options.creds),
        "127.0.0.1",
        options.control_port,
        gateway=FleetGateway(options.fleet_host, options.fleet_port),
    )


def run_federation(
    run_dir: Path,
    sites: LocalSites | ServerOptions,
    *,
    plan_path: Path | None = None,
    console: Console | None = None,
    live: bool = True,
) -> RunResult:
    """Run (``plan_path`` given: a new run folder) or continue the federation of ``run_dir``
    with ``sites``, until it ends; every engine process is stopped on the way out."""
    console = console or Console(stderr=True)
    if isinstance(sites, ServerOptions):
        enrolled = check_server_creds(sites.creds)
        plan = _run_folder(run_dir, plan_path, enrolled=[s.name for s in enrolled])
        launcher = aggregator_launcher(run_dir, sites)
    else:
        enrolled = None
        plan = _run_folder(run_dir, plan_path, enrolled=None)
        launcher = Launcher(run_dir)
    run_dir = launcher.run_dir
    t0 = time.monotonic()
    with RunStore(run_dir) as store:
        run_id = store.meta.run_id() or run_dir.name
        store.meta.set_aggregator_pid(None)
        store.meta.set_status(RunStatus.STARTING)
        store.meta.set_live(None)
    launcher.kill_leftovers()
    app = write_app(run_dir)
    try:
        if isinstance(sites, LocalSites):
            with console.status("starting the SuperLink and the sites"):
                launcher.start_superlink()
                _start_local_sites(launcher, plan, sites)
        elif enrolled is not None:
            with console.status("starting the SuperLink"):
                start_enrolled_superlink(launcher, enrolled)
            console.print(
                f"SuperLink up: sites connect to {sites.fleet_host}:{sites.fleet_port} "
                f"(Fleet API only); enrolled: {', '.join(s.name for s in enrolled)}"
            )
        flower_run = launcher.submit(app, run_config(run_dir, run_id))
        with RunStore(run_dir) as store:
            store.meta.set_flower_run_id(flower_run)
            how = "" if isinstance(sites, LocalSites) else " (deployment)"
            store.log(f"Flower run {flower_run} submitted{how}")
        watch(run_dir, plan, launcher, console, live)
    finally:
        launcher.stop()
    return run_result(run_dir, t0)


def _run_folder(run_dir: Path, plan_path: Path | None, enrolled: list[str] | None) -> PlanConfig:
    """The run's plan: a new run folder from ``plan_path``, else the continued one's."""
    if plan_path is not None:
        return prepare_run(plan_path, run_dir, enrolled=enrolled)
    if not (Path(run_dir) / PLAN_FILE).is_file():
        raise FedsegError(f"{run_dir} has no {PLAN_FILE}: start it with a plan first")
    return load_plan(Path(run_dir) / PLAN_FILE)


def _start_local_sites(launcher: Launcher, plan: PlanConfig, sites: LocalSites) -> None:
    """Simulated sites: one operator holds all the data, so the plan's summary floor rules
    (a deployed site keeps its own, ``fedseg site start --min-summary-cases``)."""
    for name, site in plan.sites.items():
        launcher.start_site(name, {NODE_SITE_NAME: name, NODE_DATA_DIR: str(site.data),
                                   "threads": sites.threads_per_site,
                                   NODE_MIN_SUMMARY_CASES: 1})  # fmt: skip


def run_result(run_dir: Path, t0: float) -> RunResult:
    """What the run folder holds now; ``t0`` is the run's ``time.monotonic()`` start."""
    with RunStore(run_dir) as store:
        best = store.meta.best()
        done = store.last_done_round()
    best_path = run_dir / BEST_MODEL
    return RunResult(
        run_dir=run_dir,
        rounds_done=done,
        best_model=best_path if best_path.is_file() else None,
        best_score=best.score if best is not None else None,
        wall_s=time.monotonic() - t0,
    )
