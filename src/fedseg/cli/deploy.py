"""`fedseg server start` and `fedseg site start`: the federation across machines."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from fedseg.errors import FedsegError
from fedseg.federation import deploy

server_app = typer.Typer(no_args_is_help=True)
site_app = typer.Typer(no_args_is_help=True)
console = Console(highlight=False)


@server_app.command("start")
def server_start(
    plan: Path = typer.Argument(..., help="Federation plan (YAML)."),
    creds: Path = typer.Option(..., "--creds", help="Coordinator credentials folder."),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Run folder (default: the plan's run folder)."
    ),
    fleet_host: str = typer.Option(
        "0.0.0.0", help="Site-facing address; only the Fleet API is served there."
    ),
    fleet_port: int = typer.Option(deploy.DEFAULT_FLEET_PORT, help="Site-facing port."),
    control_port: int = typer.Option(
        deploy.DEFAULT_CONTROL_PORT, help="Loopback port of the Control/Runtime APIs."
    ),
    keep_running: bool = typer.Option(
        False, help="Keep the SuperLink up after the run (for more runs with `flwr run`)."
    ),
) -> None:
    """Start the aggregator: SuperLink (TLS + enrolled sites only), then the plan's run."""
    sites = deploy.check_server_creds(creds)
    app_dir, run_config, plan_run_dir = deploy.plan_app(plan)
    options = deploy.ServerOptions(
        creds=creds,
        run_dir=run_dir or plan_run_dir,
        fleet_host=fleet_host,
        fleet_port=fleet_port,
        control_port=control_port,
    )
    console.print(f"starting SuperLink: Fleet API on {fleet_host}:{fleet_port}, ", end="")
    console.print(f"other APIs on {options.control_address} only")
    superlink = deploy.start_superlink(options)
    try:
        enrolled = deploy.enroll_sites(options, sites)
        console.print(f"enrolled sites: {', '.join(sorted(enrolled))}")
        console.print(f"waiting for sites, then running the plan; logs in {options.run_dir}/logs")
        code = deploy.submit_run(options, app_dir, run_config, stream_to=sys.stdout)
        if code != 0:
            raise FedsegError(f"the run failed (flwr run exit {code}); see {options.run_dir}/logs")
        if keep_running:
            console.print("run finished; SuperLink stays up (Ctrl-C to stop)")
            while superlink.alive():
                time.sleep(1)
    finally:
        superlink.stop()


@site_app.command("start")
def site_start(
    server: str = typer.Option(..., "--server", help="Aggregator Fleet address HOST:PORT."),
    data: Path = typer.Option(..., "--data", help="This site's data folder."),
    creds: Path = typer.Option(..., "--creds", help="This site's credentials folder."),
    work_dir: Path = typer.Option(
        Path("fedseg-site"), "--work-dir", help="Folder for Flower's home and logs."
    ),
    runtime_port: int = typer.Option(
        deploy.DEFAULT_SITE_RUNTIME_PORT, help="Loopback port of the SuperNode's own API."
    ),
    max_retries: int | None = typer.Option(
        None, help="Give up after this many failed connection attempts (default: never)."
    ),
) -> None:
    """Start this site's SuperNode; it trains when the aggregator runs a plan (Ctrl-C stops)."""
    options = deploy.SiteOptions(
        server=server,
        data_dir=data,
        creds=creds,
        work_dir=work_dir,
        runtime_port=runtime_port,
        max_retries=max_retries,
    )
    proc = deploy.start_site(options)
    # A service manager stops us with SIGTERM: take the SuperNode (its own session) along.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    console.print(f"SuperNode started (pid {proc.pid}), connecting to {server}; log {proc.log}")
    try:
        code = proc.popen.wait()
    finally:
        proc.stop()
    if code != 0:
        raise FedsegError(
            f"the SuperNode stopped (exit {code}): "
            + deploy.explain_supernode_failure(proc.tail(40))
            + f"; see {proc.log}"
        )
