"""Check, before any work is done, that an output path can be written.

A path is writable when the folder it goes in, or (when fedseg will make that folder) the
nearest existing folder above it, takes a new file: a probe file is created and removed,
so permissions, read-only mounts, ``/proc`` and a full disk's quota all answer, also for
root. Every problem is one ``FedsegError`` line naming the path and the reason. This module
imports nothing of fedseg but its errors (``run_folder`` builds on it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from fedseg.errors import FedsegError


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def unwritable(folder: Path) -> tuple[Path, OSError] | None:
    """Where and why a new file cannot be made in ``folder`` (or the nearest existing folder
    above it); None when it can."""
    target = nearest_existing(folder)
    if not target.is_dir():
        return target, NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
    try:
        fd, probe = tempfile.mkstemp(prefix=".fedseg-write-check-", dir=target)
    except OSError as exc:
        return target, exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def reason(exc: OSError) -> str:
    """The OS's words for ``exc`` (a full disk named as such)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return exc.strerror or str(exc)


def check_output_file(path: Path, what: str = "output") -> Path:
    """``path`` can be written as a file (its folders are made later); else one line."""
    path = Path(path)
    if path.is_dir():
        raise FedsegError(f"{what} {path} is a folder: give a file name")
    if path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY))
        except OSError as exc:
            raise FedsegError(f"{what} {path} cannot be written ({reason(exc)})") from None
        return path
    _refuse_unwritable(what, path, unwritable(path.parent))
    return path


def _refuse_unwritable(what: str, path: Path, problem: tuple[Path, OSError] | None) -> None:
    """One line naming ``path`` and the folder where nothing can be made, if ``problem``."""
    if problem is not None:
        where, exc = problem
        raise FedsegError(
            f"{what} {path} cannot be written: nothing can be made in {where} "
            f"({reason(exc)}); pick a writable place"
        )


def check_output_folder(path: Path, what: str = "output folder") -> Path:
    """``path`` is (or can be made as) a folder files can be written into; else one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FedsegError(f"{what} {path} is a file: give a folder")
    _refuse_unwritable(what, path, unwritable(path))
    return path
