"""``fedseg simulate``: the whole federation on one machine, through a Flower engine.

The same ServerApp, ClientApp, messages and :func:`run_federation` as a deployment, on
loopback with plain HTTP, on one of two engines (``--engine``):

* ``deployment`` (the default): one SuperLink and one SuperNode per site as real
  processes, exactly as in a deployment; each message to a site starts an app process, so
  memory and start-up grow with the sites;
* ``simulation``: Flower's simulation runtime (Ray): one virtual node per site, served by
  ``--workers`` long-lived site workers (default one per core, at most one per site), so
  memory and processes grow with the workers, not the sites (needs
  ``pip install 'fedseg[simulation]'``).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fedseg.federation.commands.engine_run import LocalSites, RunResult, run_federation
from fedseg.model.compute import ComputeOverrides
from fedseg.run_folder import Engine


def simulate(
    plan_path: Path,
    out: Path,
    *,
    console: Console | None = None,
    live: bool = True,
    threads_per_site: int = 1,
    compute: ComputeOverrides | None = None,
    engine: Engine = Engine.DEPLOYMENT,
    workers: int | None = None,
    fresh_process_per_task: bool = False,
) -> RunResult:
    """``fedseg simulate PLAN --out RUN``: a new run folder, then the federation on
    ``engine`` (``workers``: the simulation engine's site workers); every site computes with
    ``compute`` over the plan's ``train.compute`` (one machine). ``fresh_process_per_task``:
    see ``LocalSites``."""
    sites = LocalSites(threads_per_site, compute or ComputeOverrides(), Engine(engine), workers,
                       fresh_process_per_task)  # fmt: skip
    return run_federation(out, sites, plan_path=plan_path, console=console, live=live)
