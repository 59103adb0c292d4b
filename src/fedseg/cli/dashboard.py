"""`fedseg dashboard RUN`: the run's live, read-only web page (``fedseg.dashboard``)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import typer

from fedseg.dashboard.serve import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV
from fedseg.run_folder import PLAN_FILE, STORE_FILE

#: the options simulate and server start share to start the dashboard as a child
DASHBOARD = typer.Option(
    False, "--dashboard", help="Also serve the live dashboard on 127.0.0.1 (a child process)."
)
DASHBOARD_PORT = typer.Option(
    DEFAULT_PORT, "--dashboard-port", min=0, help="Port of --dashboard (0: any free one)."
)


def dashboard(
    run: Path = typer.Argument(..., help=f"Run folder (holds {STORE_FILE} and {PLAN_FILE})."),
    host: str = typer.Option(
        DEFAULT_HOST, "--host", help="Address to listen on; beyond loopback only with --token."
    ),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, help="Port (0: any free one)."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar=TOKEN_ENV,
        help="Every request must carry it (Authorization: Bearer TOKEN, or ?token=TOKEN "
        "once, then a cookie); required for a host beyond loopback.",
    ),
    wait: float = typer.Option(
        0.0, "--wait", min=0, hidden=True, help="Seconds to wait for the run store to appear."
    ),
    poll: float = typer.Option(
        1.0, "--poll", min=0.05, hidden=True, help="Seconds between two checks of the store."
    ),
    parent: int | None = typer.Option(
        None, "--parent", hidden=True, help="End when this process (the run command) ends."
    ),
) -> None:
    """Serve a read-only web page of a run: state, sites, curves, alarms; live while it runs.

    Prints its URL on one line, then serves until Ctrl-C."""
    from fedseg.dashboard.serve import serve

    serve(run, host, port, token or None, wait_s=wait, poll_s=poll, parent=parent, say=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)


def dashboard_or_not(on: bool, run: Path, port: int) -> AbstractContextManager[object]:
    """The ``--dashboard`` child of ``run`` for the block (its URL printed), else nothing."""
    if not on:
        return nullcontext()
    from fedseg.dashboard.child import dashboard_child

    return dashboard_child(run, port, typer.echo)
