"""The engine's processes: find a Flower program, start it, read its log, stop it.

Every engine process (SuperLink, SuperNode, the fleet gateway) starts in its own session
with its output appended to one log file, and is asked to die with the process that started
it (Linux PDEATHSIG). PDEATHSIG reaches only our direct children: the processes Flower
starts in turn (the SuperLink's SuperExec and its ServerApp, a SuperNode's SuperExec and
ClientApps) outlive a SuperLink killed that way. So a launcher also starts a reaper
(:func:`start_reaper`): a small process of its own session that waits on a pipe only the
launcher holds; when the launcher exits, however it exits (``kill -9`` included), the pipe
closes and the reaper kills every process whose environment carries one of the run's
markers (:func:`kill_marked`, the same scan a later launcher uses for leftovers: the run's
Flower home, and its Ray temp folder, which Ray's own agents carry when they do not carry
the Flower home). Stopping signals
the whole process group (a SuperNode's SuperExec and app processes stop with it): SIGTERM,
then SIGKILL for what is left after a grace period.

Flower's programs (``flower-superlink``, ``flower-supernode``, ``flwr``) are this
environment's: next to the interpreter first, then on ``PATH``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedseg.errors import FedsegError


def flower_program(name: str) -> str:
    """Path of a Flower console script (``flwr``, ``flower-superlink``, ...) of this
    environment: next to the interpreter, else on ``PATH``; a FedsegError if neither."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FedsegError(
            f"`{name}` not found next to {sys.executable} nor on PATH: install flwr==1.41.0"
        )
    return found


@dataclass
class Proc:
    """A started engine process: its role (``superlink``, ``site:NAME``, ...) and its log."""

    role: str
    popen: subprocess.Popen[bytes]
    log: Path
    fh: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 5) -> str:
        """The last ``n`` non-empty lines of the log, on one line (`` | ``-separated)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(ln.strip() for ln in [ln for ln in lines if ln.strip()][-n:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """Stop the process group (see :func:`stop_all`); the exit code."""
        stop_all([self], timeout_s)
        return self.popen.returncode


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(role: str, cmd: list[str], env: Mapping[str, str], log: Path) -> Proc:
    """Start ``cmd`` in its own session, output appended to ``log``; it dies with us."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    popen = subprocess.Popen(
        cmd, env=dict(env), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=die_with_parent,
    )  # fmt: skip
    return Proc(role, popen, log, fh)


def stop_all(procs: Iterable[Proc], timeout_s: float = 10.0) -> None:
    """SIGTERM every process group, SIGKILL what is left after ``timeout_s``; close the logs."""
    procs = list(procs)
    for p in procs:  # also when the leader is gone: what it started may still run
        _signal_group(p.pid, signal.SIGTERM)
    end = time.monotonic() + timeout_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=max(0.1, end - time.monotonic()))
    for p in procs:
        _signal_group(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=5)
        if p.fh is not None:
            p.fh.close()
            p.fh = None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


Markers = bytes | Collection[bytes]


def _markers(markers: Markers) -> list[bytes]:
    return [markers] if isinstance(markers, bytes) else list(markers)


def marked_pids(
    markers: Markers, name: bytes | None = None, skip: Collection[int] = ()
) -> list[int]:
    """Processes whose environment holds any of ``markers`` (``NAME=value``); with ``name``,
    only those whose command line contains it; ``skip`` and this process left out."""
    entries = [m + b"\0" for m in _markers(markers)]
    spared = {os.getpid(), *skip}
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in spared:
            continue
        try:
            env = (d / "environ").read_bytes()
            if not any(env.startswith(e) or b"\0" + e in env for e in entries):
                continue
            if name is not None and name not in (d / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        pids.append(int(d.name))
    return pids


def kill_marked(markers: Markers, skip: Collection[int] = ()) -> int:
    """SIGKILL every process whose environment holds one of ``markers`` (``NAME=value``),
    scanning again until none is left (a parent killed mid-fork may just have started a
    child); ``skip`` and this process are spared. How many were killed."""
    killed = 0
    for _ in range(10):
        found = 0
        for pid in marked_pids(markers, skip=skip):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                found += 1
        killed += found
        if not found:
            break
        time.sleep(0.1)
    return killed


def wait_marked_exit(markers: Markers, name: bytes, timeout_s: float) -> bool:
    """Wait until no marked process with ``name`` in its command line is left; whether
    none is (False: still there after ``timeout_s``)."""
    end = time.monotonic() + timeout_s
    while marked_pids(markers, name):
        if time.monotonic() >= end:
            return False
        time.sleep(0.2)
    return True


def start_reaper(markers: Markers, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the reaper of ``markers`` (see the module docstring): it kills the marked
    processes once our end of its stdin closes (:func:`stop_reaper`, or our death). ``env``
    must not carry the markers themselves."""
    code = "from fedseg.federation.engine.processes import _reap; _reap()"
    args = [m.decode() for m in _markers(markers)]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=dict(env), stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def stop_reaper(reaper: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Close the reaper's pipe (it sweeps once, then exits) and wait for it."""
    if reaper.stdin is not None:
        with contextlib.suppress(OSError):
            reaper.stdin.close()
    try:
        reaper.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


def _reap() -> None:  # pragma: no cover - the reaper process's body
    sys.stdin.buffer.read()  # returns at EOF: the launcher closed it or died
    kill_marked([m.encode() for m in sys.argv[1:]])
