"""``fedseg resume RUN``: continue a federation whose aggregator stopped.

The run store knows the last completed round (its model file was written before the round
was marked done); the records of the round in progress are discarded and the federation
restarts from there with the same plan, run id and sites, on the engine the run was
started on (meta ``engine``; ``--workers`` may resize a simulation engine's pool). At most
that round is lost.

A run whose lock a live process holds is refused in one line (resuming it would fight
that process); a run whose recorded cause would repeat (a plan error still in the plan, a
folder still full or unwritable) is refused by the plan check, which says so
(``engine_run.run_federation``).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation.commands.engine_run import LocalSites, RunResult, run_federation
from fedseg.model.compute import ComputeOverrides
from fedseg.run_folder import PLAN_FILE, STORE_FILE, Engine, RunLocked, probe_lock
from fedseg.tracking.store import RunStore


def check_resumable(run_dir: Path) -> int:
    """The last completed round of ``run_dir``; an error if there is nothing to continue or
    a live process runs it (:class:`~fedseg.run_folder.RunLocked`)."""
    run_dir = Path(run_dir)
    if not (run_dir / PLAN_FILE).is_file() or not (run_dir / STORE_FILE).is_file():
        raise FedsegError(
            f"{run_dir} is not a federation run folder (no {PLAN_FILE} and {STORE_FILE})"
        )
    lock = probe_lock(run_dir)
    if lock.held:
        raise RunLocked.of(run_dir, lock.holder)
    with RunStore(run_dir) as store:
        if store.meta.is_complete():
            raise FedsegError(
                f"{run_dir} is complete ({store.last_done_round()} rounds): nothing to resume"
            )
        return store.last_done_round()


def resume(
    run_dir: Path,
    *,
    console: Console | None = None,
    live: bool = True,
    threads_per_site: int = 1,
    compute: ComputeOverrides | None = None,
    workers: int | None = None,
) -> RunResult:
    """Continue the simulated federation of ``run_dir`` from its last completed round, on
    the engine it was started on (``workers``: the simulation engine's site workers); its
    sites compute with ``compute`` (this machine's choices, as ``simulate`` takes them:
    they are not stored with the run, its records say what each round used)."""
    last = check_resumable(run_dir)
    with RunStore(run_dir) as store:
        engine = store.meta.engine() or Engine.DEPLOYMENT
    sites = LocalSites(threads_per_site, compute or ComputeOverrides(), engine, workers)
    sites.check()
    with RunStore(run_dir) as store:
        store.log(f"resuming after round {last} ({engine} engine)")
    return run_federation(run_dir, sites, console=console, live=live)
