"""``fedseg simulate``: the whole federation on one machine, through the deployment engine.

One SuperLink and one SuperNode per site run as real processes on loopback, exactly as in
a deployment (same ServerApp, ClientApp and messages, same :func:`run_federation`); only
the addresses and the security (plain HTTP, loopback only) differ.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fedseg.federation.commands.engine_run import LocalSites, RunResult, run_federation
from fedseg.model.compute import ComputeOverrides


def simulate(
    plan_path: Path,
    out: Path,
    *,
    console: Console | None = None,
    live: bool = True,
    threads_per_site: int = 1,
    compute: ComputeOverrides | None = None,
) -> RunResult:
    """``fedseg simulate PLAN --out RUN``: a new run folder, then the federation; every site
    computes with ``compute`` over the plan's ``train.compute`` (one machine)."""
    sites = LocalSites(threads_per_site, compute or ComputeOverrides())
    return run_federation(out, sites, plan_path=plan_path, console=console, live=live)
