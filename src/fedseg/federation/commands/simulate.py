"""``fedseg simulate``: the whole federation on one machine, through the deployment engine.

One SuperLink and one SuperNode per site run as real processes on loopback, exactly as in
a deployment (same ServerApp, ClientApp and messages, same :func:`run_federation`); only
the addresses and the security (plain HTTP, loopback only) differ.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fedseg.federation.commands.engine_run import LocalSites, RunResult, run_federation


def simulate(
    plan_path: Path,
    out: Path,
    *,
    console: Console | None = None,
    live: bool = True,
    threads_per_site: int = 1,
) -> RunResult:
    """``fedseg simulate PLAN --out RUN``: a new run folder, then the federation."""
    return run_federation(
        out, LocalSites(threads_per_site), plan_path=plan_path, console=console, live=live
    )
