"""The dashboard as a child process of ``simulate``/``server start --dashboard``.

``dashboard_child`` starts ``python -m fedseg dashboard RUN --port N --wait S`` (loopback,
its own process: a dashboard failure cannot touch the run), reads the URL line it prints,
hands it to ``say``, and terminates the child when the block ends, however it ends; the
child also ends by itself once this process is gone (``--parent``: a ``kill -9`` of the
command leaves no dashboard behind). The child waits for the run store the command is
about to create, on loopback (with ``FEDSEG_DASHBOARD_TOKEN`` when the environment sets
it). Nothing here imports the web
stack, so the federation commands stay as light as they were.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fedseg.dashboard.serve import URL_PREFIX

#: seconds the child waits for the run store to appear
STORE_WAIT_S = 600.0
#: seconds the parent waits for the child's URL line
URL_WAIT_S = 60.0


@contextmanager
def dashboard_child(
    run: Path, port: int, say: Callable[[str], None], *, poll_s: float = 1.0
) -> Iterator[subprocess.Popen[str]]:
    """Run the dashboard of ``run`` on ``127.0.0.1:port`` for the duration of the block."""
    cmd = [
        sys.executable, "-m", "fedseg", "dashboard", str(run), "--port", str(port),
        "--wait", str(STORE_WAIT_S), "--poll", str(poll_s), "--parent", str(os.getpid()),
    ]  # fmt: skip
    # its own session: a Ctrl-C meant for the run reaches the run, which ends the child
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = _url_line(proc)
        say(line if line else "dashboard: did not start (see the lines above)")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _url_line(proc: subprocess.Popen[str]) -> str | None:
    """The child's ``dashboard: URL`` line, or None if it exits or stays silent."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + URL_WAIT_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                return None
            line = proc.stdout.readline()
            if not line:
                return None
            if line.startswith(URL_PREFIX):
                return line.strip()
        return None
    finally:
        sel.close()
