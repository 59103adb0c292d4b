"""A site's warm task worker: one long-lived process that runs its ClientApp tasks one
after another, so fedseg, torch and the site's prepared data (``train.warm``) stay loaded
between messages instead of being loaded again by a fresh process for each.

Flower 1.41's own ClientApp process (``flwr-clientapp``) pulls one task and exits; the
site's app guard (``app_guard``) is already the only taker of its tasks, so it hands each
task token to this worker instead of to a fresh process. The protocol is two private
pipes: the guard writes a token line to the worker's stdin, the worker writes one line
(the task's exit code) when that task is done; the tasks' own output goes to stderr (the
site's log). A task that comes while the worker is busy, or when it cannot be started,
runs in a fresh process as before, so a stuck task never blocks the site. The worker
dies with the guard (``PR_SET_PDEATHSIG``) and ends at the end of its stdin.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
from collections.abc import Sequence

from fedseg.federation.engine.processes import die_with_parent

#: set by the worker when it takes a task: the wall clock (``time.time()``) then, from
#: which the task measures its start-up (``client_app.task_startup_s``); unset in a fresh
#: task process, whose start-up is its age
TASK_T0_ENV = "FEDSEG_TASK_T0"


class TaskWorker:
    """The guard's handle on its worker, started on the first task given to it (and again
    after it died): ``take`` a token unless a task is under way."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.proc: subprocess.Popen[bytes] | None = None
        #: tasks given and not yet reported done (0 or 1)
        self.pending = 0
        #: processes started so far (1 while the first one lives)
        self.started = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def busy(self) -> bool:
        """Whether a task given to a live worker has not reported back yet."""
        self._collect()
        return self.pending > 0

    def take(self, token: str) -> bool:
        """Give the worker ``token``'s task; False when it is busy or could not take it
        (the caller runs the task elsewhere)."""
        if self.busy():
            return False
        if not self.alive():
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(token.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # it died just now
            return False
        self.pending = 1
        return True

    def close(self) -> None:
        """End the worker: close its stdin (it exits when idle), then stop it."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _start(self) -> None:
        if self.proc is not None:  # a dead one: reap it, close its pipes
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        self.started += 1
        self.pending = 0

    def _collect(self) -> None:
        """Count the tasks the worker reported done, without blocking; a dead worker owes
        nothing (the SuperNode fails its task when the heartbeats stop)."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            self.pending = 0
            return
        fd = proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 4096)
            if not data:  # end of its output: it exited
                self.pending = 0
                break
            self.pending = max(0, self.pending - data.count(b"\n"))
        if proc.poll() is not None:
            self.pending = 0
