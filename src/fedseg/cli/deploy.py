"""`fedseg server start` and `fedseg site start`: the federation across machines."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from fedseg.cli.compute_options import (
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    PRECISION,
    compute_overrides,
)
from fedseg.cli.dashboard import DASHBOARD, DASHBOARD_PORT, dashboard_or_not
from fedseg.errors import FedsegError
from fedseg.federation.engine.fleet_gateway import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_FLEET_PORT,
    DEFAULT_SITE_RUNTIME_PORT,
)
from fedseg.model.summary import MIN_SUMMARY_CASES

server_app = typer.Typer(no_args_is_help=True)
site_app = typer.Typer(no_args_is_help=True)
console = Console(highlight=False)


@server_app.command("start")
def server_start(
    plan: Path = typer.Argument(..., help="Federation plan (YAML); its sites must be enrolled."),
    creds: Path = typer.Option(..., "--creds", help="Coordinator credentials folder."),
    out: Path = typer.Option(..., "--out", help="New run folder."),
    fleet_host: str = typer.Option(
        "0.0.0.0", help="Site-facing address; only the Fleet API is served there."
    ),
    fleet_port: int = typer.Option(DEFAULT_FLEET_PORT, help="Site-facing port."),
    control_port: int = typer.Option(
        DEFAULT_CONTROL_PORT, help="Loopback port of the Control/Runtime APIs."
    ),
    no_live: bool = typer.Option(False, "--no-live", help="No live table (logs only)."),
    dashboard: bool = DASHBOARD,
    dashboard_port: int = DASHBOARD_PORT,
) -> None:
    """Start the aggregator: SuperLink (TLS, enrolled sites only), then run the plan."""
    from fedseg.federation.commands import deploy  # torch and Flower: only when the verb runs
    from fedseg.federation.commands.engine_run import ServerOptions

    options = ServerOptions(
        creds=creds, fleet_host=fleet_host, fleet_port=fleet_port, control_port=control_port
    )
    with dashboard_or_not(dashboard, out, dashboard_port):
        res = deploy.serve_plan(plan, out, options, live=not no_live)
    for line in res.summary():
        console.print(line)


@site_app.command("start")
def site_start(
    server: str = typer.Option(..., "--server", help="Aggregator Fleet address HOST:PORT."),
    data: Path = typer.Option(..., "--data", help="This site's data folder."),
    creds: Path = typer.Option(..., "--creds", help="This site's credentials folder."),
    work_dir: Path = typer.Option(
        Path("fedseg-site"), "--work-dir", help="Folder for Flower's home and logs."
    ),
    runtime_port: int = typer.Option(
        DEFAULT_SITE_RUNTIME_PORT, help="Loopback port of the SuperNode's own API."
    ),
    max_retries: int | None = typer.Option(
        None,
        help="Give up after this many failed connections or restarts (default: keep trying).",
    ),
    retry_wait: float = typer.Option(
        30.0, help="Seconds between restarts of a SuperNode that stopped."
    ),
    min_summary_cases: int = typer.Option(
        MIN_SUMMARY_CASES,
        min=1,
        help="Send no validation summary or training loss computed from fewer cases than "
        "this (a plan can raise it, never lower it).",
    ),
    fresh_process_per_task: bool = typer.Option(
        False,
        "--fresh-process-per-task",
        help="Run each of the aggregator's tasks in a new process (imports and data loaded "
        "again each time) instead of one warm worker that keeps them between tasks.",
    ),
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
    channels_last: bool | None = CHANNELS_LAST,
    compile_: bool | None = COMPILE,
) -> None:
    """Start this site's SuperNode; it trains whenever the aggregator runs a plan.

    The SuperNode is restarted when it stops (the aggregator restarted for a new run, this
    site was enrolled after it started, ...), each time with a one-line reason. Ctrl-C stops.
    --device and --precision choose this machine's hardware over the plan's recipe; the
    run records what each site used.
    """
    compute = compute_overrides(device, precision, channels_last, compile_)
    from fedseg.federation.commands import deploy  # torch and Flower: only when the verb runs

    options = deploy.SiteOptions(
        server=server,
        data_dir=data,
        creds=creds,
        work_dir=work_dir,
        runtime_port=runtime_port,
        max_retries=max_retries,
        min_summary_cases=min_summary_cases,
        compute=compute,
        fresh_process_per_task=fresh_process_per_task,
    )
    # A service manager stops us with SIGTERM: leave through `finally` to stop the SuperNode.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    restarts = 0
    while True:
        proc = deploy.start_site(options)
        console.print(f"SuperNode started (pid {proc.pid}), connecting to {server}; log {proc.log}")
        try:
            code = proc.popen.wait()
        finally:
            proc.stop()
        # A SuperNode never ends on its own by design; even a "graceful" exit 0 (Flower's
        # answer to a SuperLink that no longer knows the node) means: start again.
        reason = (
            f"the SuperNode stopped (exit {code}): "
            + deploy.explain_supernode_failure(proc.tail(40))
            + f"; see {proc.log}"
        )
        if max_retries is not None and restarts >= max_retries:
            raise FedsegError(reason)
        restarts += 1
        console.print(f"{reason}; restarting in {retry_wait:.0f} s")
        time.sleep(retry_wait)
