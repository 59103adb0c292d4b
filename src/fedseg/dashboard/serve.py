"""Serving the dashboard: the loopback rule, the listening socket and uvicorn.

``check_bind`` refuses a host that is not loopback unless a token is given (one line,
``FedsegError``). ``serve`` binds the socket itself, so ``--port 0`` gets a free port whose
URL it prints on one line (``dashboard: http://HOST:PORT/``, what tests and the
``--dashboard`` option of simulate/server start read) before it serves. With ``wait_s``
(the ``--dashboard`` child, started before the run folder exists) it binds and prints
first, then waits up to ``wait_s`` seconds for the run store to appear; with ``parent`` it
ends when that process does (``end_with``).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedseg.errors import FedsegError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "FEDSEG_DASHBOARD_TOKEN"
URL_PREFIX = "dashboard: "


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` (and the rest of 127/8)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not is_loopback(host) and not token:
        raise FedsegError(
            f"--host {host} is not loopback: anyone who reaches it could read the run; "
            f"give --token TOKEN (or set {TOKEN_ENV}), or keep the default {DEFAULT_HOST}"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise FedsegError(
            f"cannot listen on {host}:{port} ({exc.strerror}); "
            "choose another --port (0: any free one)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def wait_for_store(run: Path, wait_s: float) -> None:
    """Return once ``run`` holds a readable run store, or raise after ``wait_s`` seconds."""
    from fedseg.tracking.status import open_run

    deadline = time.monotonic() + wait_s
    while True:
        try:
            open_run(run).close()
            return
        except FedsegError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def serve(
    run: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    *,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    parent: int | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard of ``run`` until interrupted (or terminated, or the process
    ``parent`` is gone)."""
    import uvicorn

    from fedseg.dashboard.app import create_app

    check_bind(host, token)
    if parent is not None:
        end_with(parent)
    if wait_s <= 0:
        create_app(run, token, poll_s=poll_s)  # a folder that is not a run: before binding
    sock = bind(host, port)
    line = URL_PREFIX + url(host, sock.getsockname()[1])
    (say or _print)(line)
    if wait_s > 0:
        wait_for_store(run, wait_s)
    app = create_app(run, token, poll_s=poll_s)
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=1, access_log=False, ws="none"
    )
    uvicorn.Server(config).run(sockets=[sock])


def end_with(parent: int, every_s: float = 1.0) -> None:
    """Terminate this process (SIGTERM: uvicorn stops gracefully) once ``parent`` is no
    longer its parent: a ``--dashboard`` child never outlives its command, even one killed
    with ``kill -9`` that could not terminate it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dashboard-parent", daemon=True).start()


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
