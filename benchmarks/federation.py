"""Federation overhead: fedseg vs a bare Flower exchange, on Flower's two engines, in one run.

For one model and one set of synthetic sites, side by side, one row per engine
(``simulation``, ``deployment``) x side (``fedseg``, ``bare``):

- per-round wall time: fedseg's from a round's start to the next round's start (the last
  round: to its end; validate + train + checks + store + model files + polls), the bare
  app's from its push to its last reply (``benchmarks/bare_flower_app``: the same arrays to
  the same number of nodes and back, no training, no checks, replies polled as often as
  fedseg polls on that engine);
- the round's critical path: the max over site workers of the sum of the compute (training
  + validation wall time, as each site reports it) of the tasks that worker ran in the
  round (``TaskReply.worker``: the pid that did the work). With a worker per site (the
  deployment engine, or ``--workers`` >= sites) it is the slowest site's compute; with
  fewer workers the round runs in waves and the critical path is the longest wave chain.
  The bare app computes nothing: its critical path is 0;
- "round - critical path": what the engine and fedseg's own bookkeeping add to the work,
  split into the part inside the exchange (push of the requests to the last reply: the
  slowest site's ``wall_s``) and the coordinator's part outside it; and fedseg / bare:
  fedseg's (round - critical path) over the bare round on the same engine with the same
  workers (the issue's 1.1x goal), and the raw round ratio;
- bytes sent to / received from each site per round, against the model's size;
- under the simulation engine, where round - critical path goes: Flower's share (the bare
  round; its message queue poll found in the installed flwr) and fedseg's own;
- under the deployment engine, fedseg twice: its sites' warm task workers (the default:
  one long-lived process per site runs its tasks) and a fresh process per task
  (``fedseg site start --fresh-process-per-task``, Flower's own way), and Flower's floor
  per round (the SuperNode's sleep after an empty pull, one ClientApp process per message;
  found in the installed flwr).

Rounds after the first are summarised (the first pays the engine's start: Ray, imports).
The machine's load average is printed at the start and the end: timings on a loaded
machine are slower, and say so. On each engine the bare app runs first; a node that
replies with an error stops the benchmark at once with one line.

    python benchmarks/federation.py [--engines simulation,deployment] [--workers W]
                                    [--rounds 2] [--sites 3] [--base-filters 8] [--depth 2]
                                    [--bare-timeout 600] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.supercore.constant import PULL_INITIAL_BACKOFF
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.federation.commands.engine_run import default_workers
from fedseg.federation.commands.simulate import simulate
from fedseg.federation.engine.app_bundle import config_arg
from fedseg.federation.engine.app_guard import PULL_BACKOFF_S
from fedseg.federation.engine.launcher import TASK_POLL_S, Launcher, SimulationOptions, free_port
from fedseg.federation.engine.processes import Proc, flower_program, spawn, stop_all
from fedseg.federation.engine.server_app import POLL_S, SIM_POLL_S
from fedseg.federation.rounds.aggregation import n_bytes
from fedseg.federation.rounds.coordinator import initial_weights
from fedseg.model.config import NetworkConfig
from fedseg.plan import PlanConfig, SiteConfig, save_plan
from fedseg.run_folder import Engine
from fedseg.tracking.store import RunStore, SiteRound
from fedseg.train.config import TrainConfig

BARE_APP = Path(__file__).resolve().parent / "bare_flower_app"
#: the side name of fedseg with a fresh process per site task (deployment engine)
FRESH = "fedseg, fresh process per task"
#: the issue's goals (issue 19, item 3)
GOAL_OVERHEAD_S = 1.5
GOAL_RATIO = 1.1


# -- the numbers ------------------------------------------------------------------------
def site_compute_s(sr: SiteRound) -> float:
    """A site's compute in its round: its training + validation wall time."""
    extra = sr.extra or {}
    return float(extra.get("train_wall_s", 0.0)) + float(extra.get("val_wall_s", 0.0))


def critical_path(site_rounds: Iterable[SiteRound]) -> float:
    """Max over workers of the summed compute of the tasks each ran (``extra["worker"]``;
    a reply that names no worker counts as a worker of its own)."""
    per: dict[object, float] = {}
    for sr in site_rounds:
        worker = (sr.extra or {}).get("worker")
        key = ("worker", worker) if worker is not None else ("site", sr.site)
        per[key] = per.get(key, 0.0) + site_compute_s(sr)
    return max(per.values(), default=0.0)


def later_startups(site_rounds: Iterable[SiteRound]) -> list[float]:
    """Each task's start-up (``startup_s``: hand-over to training) in the rounds after the
    first, which pays the worker's own start."""
    return [(s.extra or {}).get("startup_s", 0.0) for s in site_rounds if s.round > 1]


def round_walls(rounds: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per done round, its wall time from its start to the next round's start (what the
    coordinator does between rounds counts), the last round from its start to its end."""
    done = sorted((r for r in rounds if r.get("started") is not None), key=lambda r: r["round"])
    out: dict[int, float] = {}
    for i, r in enumerate(done):
        nxt = done[i + 1] if i + 1 < len(done) else None
        if nxt is not None and nxt["round"] == r["round"] + 1:
            out[r["round"]] = float(nxt["started"]) - float(r["started"])
        elif r.get("wall_s") is not None:
            out[r["round"]] = float(r["wall_s"])
    return out


@dataclass(frozen=True)
class Side:
    """One row of the comparison: an engine, a side (fedseg or bare), its per-round wall
    times and critical paths."""

    engine: Engine
    side: str
    workers: int
    walls: dict[int, float]
    paths: dict[int, float]
    #: per round, push of the requests to the last reply pulled (fedseg: its slowest site's
    #: ``wall_s``; bare: the whole round)
    exchanges: dict[int, float]

    def later(self) -> list[int]:
        """The rounds summarised: after the first (engine start), or all if only one."""
        rounds = sorted(self.walls)
        return [r for r in rounds if r > 1] or rounds

    def mean(self, what: Mapping[int, float]) -> float:
        return float(np.mean([what.get(r, 0.0) for r in self.later()]))

    @property
    def wall_s(self) -> float:
        return self.mean(self.walls)

    @property
    def path_s(self) -> float:
        return self.mean(self.paths)

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.path_s

    @property
    def exchange_s(self) -> float:
        return self.mean(self.exchanges)

    @property
    def outside_s(self) -> float:
        """The round's time outside the exchange (fedseg: the coordinator's own work)."""
        return self.wall_s - self.exchange_s


def load() -> str:
    """The machine's load average (1, 5, 15 min) and its cores, for the record."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


# -- the bare side ----------------------------------------------------------------------
def start_plain_node(launcher: Launcher, name: str) -> Proc:
    """A plain Flower SuperNode on ``launcher``'s SuperLink (loopback, insecure): Flower's own
    ``--isolation subprocess``, no app guard (a fedseg site refuses any app but fedseg's).
    Started by the one process wrapper with the launcher's environment (its run marker: the
    launcher's reaper sweeps it too)."""
    cmd = [flower_program("flower-supernode"), "--superlink", launcher.site_address,
           "--insecure", "--host", "127.0.0.1", "--port", str(free_port()),
           "--isolation", "subprocess",
           "--node-config", config_arg({"site-name": name})]  # fmt: skip
    return spawn(f"bare:{name}", cmd, launcher.env, launcher.logs / f"bare-{name}.log")


def bare_exchange(workdir: Path, arrays: Path, rounds: int, n_sites: int, timeout_s: int,
                  engine: Engine = Engine.DEPLOYMENT, workers: int = 1) -> dict:  # fmt: skip
    """Run the bare app on a fresh SuperLink with ``n_sites`` nodes: plain SuperNodes (the
    deployment engine) or virtual nodes served by ``workers`` Ray workers (the simulation
    engine), replies polled as fedseg's ServerApp polls them there; its JSON result. Exits
    with one line if a node replies with an error, a node dies, or ``timeout_s`` passes."""
    result = workdir / "bare.json"
    result.unlink(missing_ok=True)
    launcher = Launcher(workdir)
    nodes: list[Proc] = []
    simulation = engine == Engine.SIMULATION
    try:
        if simulation:
            launcher.start_superlink(simulation=SimulationOptions(nodes=n_sites, workers=workers))
        else:
            launcher.start_superlink()
            nodes = [start_plain_node(launcher, f"site{i + 1}") for i in range(n_sites)]
        launcher.submit(BARE_APP, {"arrays": str(arrays), "rounds": rounds, "nodes": n_sites,
                                   "result": str(result), "timeout_s": timeout_s,
                                   "poll_s": SIM_POLL_S if simulation else POLL_S})  # fmt: skip
        end = time.monotonic() + timeout_s + 30
        while not result.is_file():
            dead = [p for p in [*nodes, *launcher.procs] if not p.alive()]
            if dead:
                raise SystemExit(f"bare exchange: {dead[0].role} exited: {dead[0].tail(2)} "
                                 f"(log {dead[0].log})")  # fmt: skip
            if time.monotonic() > end:
                raise SystemExit(
                    f"bare exchange: no result within {timeout_s} s (logs {launcher.logs})"
                )
            time.sleep(0.5)
    finally:
        stop_all(nodes)
        launcher.stop()
    out = json.loads(result.read_text())
    if "error" in out:
        raise SystemExit(f"bare exchange failed: {out['error']} (logs {launcher.logs})")
    return out


# -- Flower's deployment floor ----------------------------------------------------------
@dataclass(frozen=True)
class EngineFloor:
    """Flower's deployment-engine floor per round, read from the installed flwr."""

    flwr_version: str
    idle_sleep_s: float | None  #: a SuperNode's sleep after an empty pull
    idle_sleep_at: str  #: where (file:line), or why it was not found
    one_message_at: str  #: where a ClientApp process exits after its one message
    clientapp_import_s: float  #: a fresh interpreter importing Flower's ClientApp runner
    pull_backoff_s: float  #: Flower's first retry of an object a store does not hold yet

    @property
    def floor_s(self) -> float:
        return (self.idle_sleep_s or 0.0) + self.clientapp_import_s


def _find(module: str, pattern: str, after: str | None = None) -> tuple[str, re.Match[str] | None]:
    """``file:line`` of the first line of ``module``'s source matching ``pattern`` (after the
    first line containing ``after``, if given), and the match."""
    path = Path(importlib.util.find_spec(module).origin)  # type: ignore[union-attr, arg-type]
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if after in ln), 0) if after else 0
    rel = path.relative_to(path.parents[len(module.split(".")) - 1])
    for i in range(start, len(lines)):
        if m := re.search(pattern, lines[i]):
            return f"{rel}:{i + 1}", m
    return f"{rel}: no line matching {pattern!r}", None


def engine_floor() -> EngineFloor:
    """Where Flower's deployment engine puts a floor under every round: the SuperNode's
    hard-coded sleep after an empty pull, and one ClientApp process per message (its
    start-up measured here, imports only). The lines are found in the installed flwr."""
    import flwr

    sleep_at, sleep = _find("flwr.supernode.start_client_internal", r"time\.sleep\(([\d.]+)\)",
                            after="If no message was received")  # fmt: skip
    exit_at, _ = _find("flwr.supernode.runtime.run_clientapp", r"flwr_exit\(",
                       after="reply_message = client_app(")  # fmt: skip
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import flwr.supernode.runtime.run_clientapp"],
                   check=True)  # fmt: skip
    return EngineFloor(
        flwr_version=flwr.__version__,
        idle_sleep_s=float(sleep.group(1)) if sleep else None,
        idle_sleep_at=sleep_at,
        one_message_at=exit_at,
        clientapp_import_s=time.monotonic() - t0,
        pull_backoff_s=float(PULL_INITIAL_BACKOFF),
    )


def print_floor(console: Console, f: EngineFloor, fed: Side, bare: Side) -> None:
    """The deployment engine's floor next to its measured rows."""
    sleep = f"{f.idle_sleep_s:.1f} s" if f.idle_sleep_s is not None else "(not found)"
    lines = [
        f"Flower {f.flwr_version} deployment-engine floor per round:",
        f"  - a SuperNode sleeps {sleep} after an empty pull ({f.idle_sleep_at}):",
        "    the site that replies last has pulled (empty) before the next round's message",
        "    exists, so it sees that message about that much later, every round after the first;",
        f"  - one message per ClientApp process ({f.one_message_at} exits after one task):",
        "    bare Flower starts a fresh process for every message; importing Flower's runner "
        f"alone took {f.clientapp_import_s:.1f} s here. fedseg's sites hand their tasks to "
        "their warm worker instead (one process per site, started on its first message);",
        "  - a SuperNode makes a message's task before it has pulled the message's arrays "
        f"from the SuperLink, and retries an array not there yet after {f.pull_backoff_s:.0f} s "
        "then twice that (Flower's pull backoff); a fresh process's start-up hides that wait, "
        f"a warm worker sees it (it re-polls its SuperNode after {PULL_BACKOFF_S[0]} s, at "
        f"most every {PULL_BACKOFF_S[1]} s);",
        f"  - plus polls of up to 0.5 s (SuperNode reply wait), {POLL_S} s (ServerApp), "
        f"{TASK_POLL_S} s (a fedseg site's guard taking its tasks; bare Flower's SuperExec).",
        f"  floor ~ {f.floor_s:.1f} s per round for bare Flower, {f.idle_sleep_s or 0.0:.1f} s "
        f"with a warm worker; measured: bare Flower {bare.wall_s:.1f} s, fedseg "
        f"{fed.wall_s:.1f} s - {fed.path_s:.1f} s critical path = {fed.overhead_s:.1f} s.",
    ]
    console.print("\n".join(lines), soft_wrap=True, highlight=False)


# -- one engine -------------------------------------------------------------------------
def fedseg_side(plan_path: Path, run: Path, engine: Engine, workers: int | None,
                console: Console, fresh: bool = False) -> tuple[Side, list[SiteRound]]:  # fmt: skip
    """``fedseg simulate`` on ``engine`` (``fresh``: a new process per site task); its row
    and its site rounds."""
    res = simulate(plan_path, run, live=False, console=console, engine=engine,
                   workers=workers if engine == Engine.SIMULATION else None,
                   fresh_process_per_task=fresh)  # fmt: skip
    with RunStore(res.run_dir) as store:
        walls = round_walls(store.rounds())
        srs = [s for s in store.site_rounds() if s.round in walls]
    paths = {r: critical_path(s for s in srs if s.round == r) for r in walls}
    exchanges = {r: max((s.wall_s or 0.0 for s in srs if s.round == r), default=0.0)
                 for r in walls}  # fmt: skip
    n = len({s.site for s in srs})
    side = FRESH if fresh else "fedseg"
    return Side(engine, side, workers or n, walls, paths, exchanges), srs


def _first_of(rows: Sequence[tuple[Side, Side]], bare: Side) -> int:
    """The index of the first row paired with ``bare`` (its bare row is printed there)."""
    return next(i for i, (_, b) in enumerate(rows) if b is bare)


def compare_table(title: str, rows: Sequence[tuple[Side, Side]]) -> Table:
    """Per engine, the fedseg row and the bare row: round, critical path, their difference,
    and fedseg / bare."""
    t = Table(title=title)
    for c in ("engine", "side", "workers", "round 1", "rounds (mean)", "critical path",
              "round - critical path", "of it: exchange - c.p.", "of it: outside the exchange",
              "fedseg / bare (round - c.p.)", "fedseg / bare (round)"):  # fmt: skip
        t.add_column(c, justify="right")
    for i, (fed, bare) in enumerate(rows):
        for s in (fed, bare) if i == _first_of(rows, bare) else (fed,):
            ratio = raw = ""
            if s is fed:
                ratio = f"{fed.overhead_s / bare.wall_s:.2f}x"
                raw = f"{fed.wall_s / bare.wall_s:.2f}x"
            first = s.walls.get(1, float("nan"))
            t.add_row(str(s.engine), s.side, str(s.workers), f"{first:.2f}", f"{s.wall_s:.2f}",
                      f"{s.path_s:.2f}", f"{s.overhead_s:.2f}", f"{s.exchange_s - s.path_s:.2f}",
                      f"{s.outside_s:.2f}", ratio, raw)  # fmt: skip
    return t


def per_round_table(rows: Sequence[tuple[Side, Side]]) -> Table:
    t = Table(title="per round (seconds)")
    for c in ("engine", "side", "round", "wall", "critical path", "wall - c.p."):
        t.add_column(c, justify="right")
    for i, (fed, bare) in enumerate(rows):
        for s in (fed, bare) if i == _first_of(rows, bare) else (fed,):
            for r in sorted(s.walls):
                p = s.paths.get(r, 0.0)
                t.add_row(str(s.engine), s.side, str(r), f"{s.walls[r]:.2f}", f"{p:.2f}",
                          f"{s.walls[r] - p:.2f}")  # fmt: skip
    return t


def goals(console: Console, fed: Side, bare: Side) -> None:
    ratio = fed.overhead_s / bare.wall_s
    met = {True: "met", False: "NOT met"}
    console.print(
        f"{fed.engine} engine, {fed.workers} workers, rounds {', '.join(map(str, fed.later()))}: "
        f"round - critical path {fed.overhead_s:.2f} s (goal <= {GOAL_OVERHEAD_S} s: "
        f"{met[fed.overhead_s <= GOAL_OVERHEAD_S]}); fedseg / bare {ratio:.2f}x "
        f"(goal <= {GOAL_RATIO}x: {met[ratio <= GOAL_RATIO]})",
        highlight=False,
    )


def print_simulation_floor(console: Console, fed: Side, bare: Side) -> None:
    """Where a simulation-engine round's time over its critical path goes: Flower's share
    (the bare round, with its polls found in the installed flwr) and fedseg's own, split
    into the coordinator's work outside the exchange and the per-task work in it."""
    queue_at, queue = _find("flwr.server.superlink.fleet.vce.vce_api", r"f_stop\.wait\(([\d.]+)\)",
                            after="def add_messages_to_queue")  # fmt: skip
    poll = f"{float(queue.group(1)):.2f} s" if queue else "(not found)"
    own = fed.overhead_s - bare.wall_s
    in_exchange = fed.exchange_s - fed.path_s - bare.wall_s
    lines = [
        "Simulation engine, where round - critical path goes:",
        f"  - Flower's share, the bare round: {bare.wall_s:.2f} s; the simulation runtime moves "
        f"new messages to its workers every {poll} ({queue_at}), and the ServerApp pulls "
        f"replies every {SIM_POLL_S} s (fedseg's SIM_POLL_S, the bare app's too);",
        f"  - fedseg's own: {own:.2f} s = {fed.outside_s:.2f} s outside the exchange (the "
        "coordinator: requests encoded, replies checked, aggregation, model file, store rows, "
        "cross-site parking, alarms)",
        f"    + {in_exchange:.2f} s in it beyond Flower's (per task at the site: the weights "
        "decoded and encoded, the site's workspace and data checked, its optimizer state file "
        f"written; {fed.workers} workers for the sites: a worker's tasks run one after the "
        "other);",
        f"  fedseg / bare <= {GOAL_RATIO}x would leave fedseg "
        f"{(GOAL_RATIO - 1) * bare.wall_s:.3f} s per round for that work.",
    ]
    console.print("\n".join(lines), soft_wrap=True, highlight=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="simulation,deployment",
                    help="comma-separated Flower engines (simulation, deployment)")  # fmt: skip
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="site workers of the simulation engine (default min(cores, sites))",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--bare-timeout", type=int, default=600,
                    help="seconds the bare exchange may take before it is given up")  # fmt: skip
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: tmp)")
    args = ap.parse_args()
    try:
        engines = [Engine(e.strip()) for e in args.engines.split(",") if e.strip()]
    except ValueError as exc:
        raise SystemExit(f"--engines: {exc}; choose from simulation, deployment") from None
    console = Console(width=None if sys.stdout.isatty() else 140)  # a log keeps the table whole
    work = args.keep or Path(tempfile.mkdtemp(prefix="fedseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    workers = args.workers or default_workers(args.sites)
    console.print(f"{load()} at the start", highlight=False)

    console.print(f"work folder {work}: writing {args.sites} synthetic sites")
    sites = make_tiny_dataset(work / "data", sites=args.sites, cases_per_site=4, seed=0)
    d = 2**args.depth
    patch = max(16, d)
    plan = PlanConfig(
        name="bench",
        sites={s: SiteConfig(data=work / "data" / s) for s in sites},
        rounds=args.rounds,
        min_sites=1,
        round_timeout_s=1800,
        network=NetworkConfig(base_filters=args.base_filters, depth=args.depth),
        train=TrainConfig.cpu(
            patch_size=(patch,) * 3,
            val_roi=(32, 32, 32),
            val_overlap=0.0,
            val_batch_size=4,
            cache_mb=64,
        ),
    )
    plan_path = save_plan(work / "plan.yaml", plan)
    weights = initial_weights(plan)
    model_bytes = n_bytes(weights)
    arrays = work / "arrays.npz"
    np.savez(arrays, **weights)

    rows: list[tuple[Side, Side]] = []
    startup: dict[str, list[float]] = {}
    site_rounds: dict[Engine, list[SiteRound]] = {}
    bares: dict[Engine, dict] = {}
    for engine in engines:
        w = workers if engine == Engine.SIMULATION else args.sites
        console.print(f"{engine} engine: bare Flower exchange ({w} workers) ...")
        bare = bare_exchange(work / f"bare-{engine}", arrays, args.rounds, args.sites,
                             args.bare_timeout, engine, w)  # fmt: skip
        bares[engine] = bare
        bare_walls = {int(r["round"]): float(r["wall_s"]) for r in bare["rounds"]}
        console.print(f"{engine} engine: fedseg simulate ({w} workers) ...")
        sim_workers = workers if engine == Engine.SIMULATION else None
        fed, srs = fedseg_side(plan_path, work / f"run-{engine}", engine, sim_workers, console)
        site_rounds[engine] = srs
        bare_side = Side(engine, "bare", w, bare_walls, dict.fromkeys(bare_walls, 0.0),
                         bare_walls)  # fmt: skip
        rows.append((fed, bare_side))
        if engine == Engine.DEPLOYMENT:
            startup["fedseg, warm worker per site"] = later_startups(srs)
            console.print(f"{engine} engine: fedseg simulate, a fresh process per site task ...")
            fresh, fresh_srs = fedseg_side(plan_path, work / f"run-{engine}-fresh", engine,
                                           None, console, fresh=True)  # fmt: skip
            rows.append((fresh, bare_side))
            startup[FRESH] = later_startups(fresh_srs)

    console.print(per_round_table(rows))
    console.print(compare_table(
        f"seconds per round, {args.sites} sites, model {model_bytes / 1e6:.2f} MB, rounds after "
        "the first (critical path: max over workers of their tasks' training + validation wall)",
        rows,
    ))  # fmt: skip
    for fed, bare in rows:
        goals(console, fed, bare)
        if fed.engine == Engine.SIMULATION:
            print_simulation_floor(console, fed, bare)
        if fed.engine == Engine.DEPLOYMENT and fed.side != FRESH:
            print_floor(console, engine_floor(), fed, bare)

    b = Table(title="bytes per site per round")
    for c in ("engine", "side", "sent (mean)", "received (mean)", "model size", "sent / model"):
        b.add_column(c, justify="right")
    for engine in engines:
        srs, bare = site_rounds[engine], bares[engine]
        sent = np.mean([s.bytes_sent for s in srs])
        recv = np.mean([s.bytes_received for s in srs])
        b.add_row(str(engine), "fedseg", f"{sent:,.0f}", f"{recv:,.0f}", f"{model_bytes:,}",
                  f"{sent / model_bytes:.4f}")  # fmt: skip
        bare_recv = np.mean([x for r in bare["rounds"] for x in r["bytes"]])
        b.add_row(str(engine), "bare", f"{bare['sent_bytes']:,}", f"{bare_recv:,.0f}",
                  f"{model_bytes:,}", f"{bare['sent_bytes'] / model_bytes:.4f}")  # fmt: skip
    console.print(b)
    for side, values in startup.items():  # the deployment engine's (a Ray worker reports 0)
        console.print(f"{side}: a site task's start-up, from its hand-over (a fresh process: "
                      f"its start) to its training (mean, rounds after the first): "
                      f"{np.mean(values):.1f} s")  # fmt: skip
    console.print(f"{load()} at the end", highlight=False)


if __name__ == "__main__":
    main()
