"""One federation run over a Flower engine: ``simulate``, ``resume`` and ``server start``
all go through :func:`run_federation`.

1. the run folder: created from a plan file (a new run) or continued (``resume``); the plan
   is read once and checked whole before any process starts
   (:func:`~fedseg.federation.commands.run_folder.check_plan_runs`: strategy, initial model,
   a writable folder with room for a round); then the run lock is taken
   (:class:`~fedseg.run_folder.RunLock`: a second process on a live run is refused in one
   line) and held, with its heartbeat, until this function returns;
2. the SuperLink, with the security of where the sites are:

   * :class:`LocalSites` (a simulation): plain HTTP on loopback, and the plan's sites on
     this machine, reading the plan's data folders, on one of two engines
     (:class:`~fedseg.run_folder.Engine`, recorded in the run store so that ``resume``
     continues on the same one):

     - ``deployment``: one SuperNode per plan site, started here;
     - ``simulation``: Flower's simulation runtime, one virtual node per site and a Ray
       pool of ``workers`` site workers (memory and processes bounded by the workers, not
       the sites); each virtual node reads its site's settings from the node table
       ``flwr-home/sim_nodes.json`` (``client_app.node_settings``), which holds exactly
       what a SuperNode of the deployment engine gets on its command line;

   * :class:`ServerOptions` (a deployment): TLS with the coordinator's server certificate,
     SuperNode authentication with the enrolled keys only
     (:mod:`fedseg.federation.security.enrollment`), and the Fleet API alone on the
     site-facing address (:mod:`fedseg.federation.engine.fleet_gateway`); the sites start
     their own SuperNodes (``fedseg site start``);

3. ``flwr run`` of the app bundle, recorded in the run store (meta ``flower_run_id`` and an
   event);
4. :func:`~fedseg.federation.commands.watch.watch` until the ServerApp says done or failed;
5. a simulation's Flower log of the run kept (``logs/flower-run-<id>.log``: the ServerApp's
   output, and the simulation runtime's under the simulation engine); every process
   stopped, whatever happened; a run that ended badly without the
   ServerApp saying so gets its cause recorded (meta ``cause``: ``crashed`` when the
   aggregator died without a word, else ``failed``); the :class:`RunResult` read from the
   store.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation.commands.run_folder import (
    check_plan_runs,
    prepare_run,
    round_bytes,
)
from fedseg.federation.commands.watch import AggregatorDied, watch
from fedseg.federation.engine.app_bundle import ConfigValue, run_config, write_app
from fedseg.federation.engine.client_app import (
    NODE_CREDS_DIR,
    NODE_DATA_DIR,
    NODE_MIN_SUMMARY_CASES,
    NODE_SITE_NAME,
    compute_node_config,
)
from fedseg.federation.engine.fleet_gateway import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_FLEET_PORT,
    FleetGateway,
)
from fedseg.federation.engine.launcher import SIMULATION_EXIT_S, Launcher, SimulationOptions
from fedseg.federation.security.enrollment import (
    check_server_creds,
    server_security,
    start_enrolled_superlink,
)
from fedseg.federation.security.pki import SIMULATED_PKI, throwaway_site_creds
from fedseg.model.compute import ComputeOverrides, resolve_device
from fedseg.plan import PlanConfig, load_plan
from fedseg.run_folder import (
    BEST_MODEL,
    FLWR_HOME,
    PLAN_FILE,
    SIM_NODES_FILE,
    STORE_FILE,
    CauseKind,
    Engine,
    FailureCause,
    RunLock,
    RunStatus,
    cause_of,
)
from fedseg.tracking.curves import store_score_spec
from fedseg.tracking.status import open_run
from fedseg.tracking.store import RunStore


def default_workers(n_sites: int) -> int:
    """``min(cores, sites)``: one site worker per core this process may use."""
    return max(1, min(len(os.sched_getaffinity(0)), n_sites))


def require_ray() -> None:
    """A one-line error unless Ray (Flower's simulation backend) is importable."""
    if importlib.util.find_spec("ray") is None:
        raise FedsegError(
            "--engine simulation needs Ray (Flower's simulation backend): "
            "pip install 'fedseg[simulation]', or use --engine deployment"
        )


@dataclass(frozen=True)
class LocalSites:
    """A simulation: the plan's sites on this machine, plain HTTP on loopback, on ``engine``
    (``workers``: the simulation engine's site workers, default :func:`default_workers`).
    ``compute``: this machine's device and precision choices, the same for every site.
    ``fresh_process_per_task``: the deployment engine's sites run each task in a new
    process instead of their warm worker (``engine.task_worker``)."""

    threads_per_site: int = 1
    compute: ComputeOverrides = field(default_factory=ComputeOverrides)
    engine: Engine = Engine.DEPLOYMENT
    workers: int | None = None
    fresh_process_per_task: bool = False

    def check(self) -> None:
        """Refuse what cannot start, in one line, before anything is made."""
        if self.workers is not None and self.workers < 1:
            raise FedsegError(f"--workers {self.workers}: give at least 1 site worker")
        if self.engine == Engine.DEPLOYMENT and self.workers is not None:
            raise FedsegError(
                "--workers sizes the simulation engine's pool: use it with --engine simulation"
                " (the deployment engine runs one SuperNode per site)"
            )
        if self.engine == Engine.SIMULATION:
            require_ray()


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
    #: what ``best_score`` is: the run's round score (``tracking.curves.ScoreSpec``)
    score_label: str = "mean validation Dice"

    def summary(self) -> list[str]:
        """The lines a verb prints at the end: run folder, rounds, time, best model."""
        lines = [f"run folder: {self.run_dir}  ({self.rounds_done} rounds, {self.wall_s:.0f} s)"]
        if self.best_model is not None and self.best_score is not None:
            lines.append(
                f"best model: {self.best_model} ({self.score_label} {self.best_score:.3f})"
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
    else:
        enrolled = None
        sites.check()
        # the sites are here: a GPU this machine lacks is one line before they start
        if sites.compute.device is not None:
            resolve_device(sites.compute.device)  # before the run folder is made
        if plan_path is None:
            _check_same_engine(run_dir, sites.engine)
        plan = _run_folder(run_dir, plan_path, enrolled=None)
        resolve_device(plan.train.with_compute(sites.compute).compute.device)
    with RunLock.acquire(run_dir):
        if isinstance(sites, ServerOptions):
            launcher = aggregator_launcher(run_dir, sites)
        else:
            launcher = Launcher(run_dir)
        run_dir = launcher.run_dir
        t0 = time.monotonic()
        with RunStore(run_dir) as store:
            run_id = store.meta.run_id() or run_dir.name
            store.meta.set_aggregator_pid(None)
            store.meta.clear_cause()
            store.meta.set_status(RunStatus.STARTING)
            store.meta.set_live(None)
            store.meta.set_round_bytes(round_bytes(plan))
            if isinstance(sites, LocalSites):
                store.meta.set_engine(sites.engine)
        launcher.kill_leftovers()
        sim_nodes: Path | None = None
        flower_run: int | None = None
        ended = False
        try:
            app = write_app(run_dir)
            if isinstance(sites, LocalSites) and sites.engine == Engine.SIMULATION:
                sim_nodes = _write_sim_nodes(plan, sites, run_dir)
                workers = sites.workers or default_workers(len(plan.sites))
                with console.status(f"starting the simulation engine ({workers} site workers)"):
                    launcher.start_superlink(
                        simulation=SimulationOptions(nodes=len(plan.sites), workers=workers)
                    )
            elif isinstance(sites, LocalSites):
                with console.status("starting the SuperLink and the sites"):
                    launcher.start_superlink()
                    _start_local_sites(launcher, plan, sites, run_dir)
            elif enrolled is not None:
                with console.status("starting the SuperLink"):
                    start_enrolled_superlink(launcher, enrolled)
                console.print(
                    f"SuperLink up: sites connect to {sites.fleet_host}:{sites.fleet_port} "
                    f"(Fleet API only); enrolled: {', '.join(s.name for s in enrolled)}"
                )
            flower_run = launcher.submit(app, run_config(run_dir, run_id, sim_nodes))
            with RunStore(run_dir) as store:
                store.meta.set_flower_run_id(flower_run)
                how = (" (deployment)" if isinstance(sites, ServerOptions)
                       else " (simulation engine)" if sim_nodes is not None else "")  # fmt: skip
                store.log(f"Flower run {flower_run} submitted{how}")
            watch(run_dir, plan, launcher, console, live)
            ended = True
        except BaseException as exc:
            cause = _record_end(run_dir, exc)
            if cause is not None and not isinstance(exc, KeyboardInterrupt):
                raise FedsegError(cause.message) from None  # the specific line (a full disk)
            raise
        finally:  # a run that ended lets flwr-simulation shut Ray down first
            if flower_run is not None and isinstance(sites, LocalSites):
                launcher.save_run_log(flower_run)
            launcher.stop(simulation_exit_s=SIMULATION_EXIT_S if ended else 0.0)
        return run_result(run_dir, t0)


def _record_end(run_dir: Path, exc: BaseException) -> FailureCause | None:
    """Record why the run ended with ``exc`` unless the ServerApp already said (``done`` or
    ``failed``): ``crashed`` for an aggregator that died without a word or an interrupt,
    else ``failed`` with the cause (:func:`~fedseg.run_folder.cause_of`). Returns the
    recorded cause when it is a full disk or an unwritable folder (it says more than
    ``exc``); never raises (the store may be on the full disk)."""
    try:
        with RunStore(run_dir) as store:
            if store.meta.status() in (RunStatus.DONE, RunStatus.FAILED):
                return None
            cause = cause_of(exc, run_dir, store.meta.round_bytes() or 0)
            if isinstance(exc, KeyboardInterrupt):
                cause = FailureCause.now(CauseKind.ERROR, "interrupted (Ctrl-C)")
            elif isinstance(exc, AggregatorDied) and cause.kind == CauseKind.FEDERATION:
                cause = FailureCause.now(CauseKind.AGGREGATOR_DIED, str(exc))
            elif cause.kind == CauseKind.FEDERATION:  # raised here: the engine's
                cause = FailureCause.now(CauseKind.ENGINE, cause.message)
            crashed = isinstance(exc, AggregatorDied | KeyboardInterrupt)
            store.meta.set_failed(cause, RunStatus.CRASHED if crashed else RunStatus.FAILED)
            store.log(f"run {store.meta.status()}: {cause.message}", "error")
    except (sqlite3.Error, OSError, FedsegError):
        with contextlib.suppress(Exception):
            return cause_of(exc, run_dir)
        return None
    return cause if cause.kind in (CauseKind.DISK_FULL, CauseKind.UNWRITABLE) else None


def _run_folder(run_dir: Path, plan_path: Path | None, enrolled: list[str] | None) -> PlanConfig:
    """The run's plan, checked whole: a new run folder from ``plan_path``, else the
    continued one's (a check that fails says whether the run already failed on it)."""
    if plan_path is not None:
        return prepare_run(plan_path, run_dir, enrolled=enrolled)
    if not (Path(run_dir) / PLAN_FILE).is_file():
        raise FedsegError(f"{run_dir} has no {PLAN_FILE}: start it with a plan first")
    try:
        plan = load_plan(Path(run_dir) / PLAN_FILE)
        check_plan_runs(plan, run_dir)
    except FedsegError as exc:
        raise FedsegError(f"{exc}{_repeats(run_dir)}") from None
    return plan


def _repeats(run_dir: Path) -> str:
    """``; the run already stopped on this ...`` when its recorded cause would repeat."""
    if not (Path(run_dir) / STORE_FILE).is_file():
        return ""
    with contextlib.suppress(sqlite3.Error, OSError, FedsegError):
        store = open_run(run_dir)
        try:
            cause = store.meta.cause()
        finally:
            store.close()
        if cause is not None and cause.repeats:
            return f"; the run already stopped on this ({cause.kind}): resuming only repeats it"
    return ""


def local_node_configs(
    plan: PlanConfig, sites: LocalSites, run_dir: Path
) -> dict[str, dict[str, ConfigValue]]:
    """Each simulated site's node settings, in plan order (both engines: a SuperNode's
    ``--node-config``, or its entry of the simulation's node table). One operator holds all
    the data, so the plan's summary floor rules (a deployed site keeps its own, ``fedseg
    site start --min-summary-cases``); one machine, so every site takes its compute choices.
    Under secure aggregation each site gets consortium credentials from a throwaway CA of
    the run (``pki.throwaway_site_creds`` in ``flwr-home/secagg-pki``), so the simulated
    sites sign and check their round keys as deployed ones do."""
    creds = {}
    if plan.privacy.secure_aggregation:
        creds = throwaway_site_creds(run_dir / FLWR_HOME / SIMULATED_PKI, list(plan.sites))
    out: dict[str, dict[str, ConfigValue]] = {}
    for name, site in plan.sites.items():
        extra = {NODE_CREDS_DIR: str(creds[name])} if name in creds else {}
        out[name] = {NODE_SITE_NAME: name, NODE_DATA_DIR: str(site.data),
                     "threads": sites.threads_per_site, NODE_MIN_SUMMARY_CASES: 1,
                     **compute_node_config(sites.compute), **extra}  # fmt: skip
    return out


def _start_local_sites(
    launcher: Launcher, plan: PlanConfig, sites: LocalSites, run_dir: Path
) -> None:
    """The deployment engine's simulated sites: one SuperNode each."""
    for name, node_config in local_node_configs(plan, sites, run_dir).items():
        launcher.start_site(name, node_config, sites.fresh_process_per_task)


def _write_sim_nodes(plan: PlanConfig, sites: LocalSites, run_dir: Path) -> Path:
    """The simulation engine's node table: partition id i -> the i-th plan site's settings
    (``client_app.node_settings`` reads it)."""
    path = Path(run_dir) / FLWR_HOME / SIM_NODES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(local_node_configs(plan, sites, run_dir).values()), indent=1))
    return path


def _check_same_engine(run_dir: Path, engine: Engine) -> None:
    """A continued run keeps the engine it was started on (a run that recorded none ran on
    the deployment engine)."""
    if not (Path(run_dir) / STORE_FILE).is_file():
        return
    with RunStore(run_dir) as store:
        recorded = store.meta.engine() or Engine.DEPLOYMENT
    if recorded != engine:
        raise FedsegError(
            f"{run_dir} was started on the {recorded} engine and continues only on it: "
            f"`fedseg resume {run_dir}` does"
        )


def run_result(run_dir: Path, t0: float) -> RunResult:
    """What the run folder holds now; ``t0`` is the run's ``time.monotonic()`` start."""
    with RunStore(run_dir) as store:
        best = store.meta.best()
        done = store.last_done_round()
        spec = store_score_spec(store)
    best_path = run_dir / BEST_MODEL
    return RunResult(
        run_dir=run_dir,
        rounds_done=done,
        best_model=best_path if best_path.is_file() else None,
        best_score=best.score if best is not None else None,
        wall_s=time.monotonic() - t0,
        score_label=f"mean validation {spec.label}",
    )
