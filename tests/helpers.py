"""Plain helpers shared by the test folders (fixtures live in ``tests/conftest.py``).

- ``run_fedseg``: the real CLI in a subprocess, as a user runs it; ``fedseg_env`` is its
  environment (this checkout's ``src`` importable, a wide terminal, no colours, nothing
  phoned home), also for the tests that start ``fedseg`` with ``Popen``.
- ``free_port``: the launcher's own, so tests and the engine pick ports one way.
- ``TINY_SYNTH``: the tiny synthetic data set that the session fixture ``tiny_dataset``
  writes once (3 sites x 4 cases, 4 mm voxels: a 60x60x39 grid, seconds to write).

Folder-specific helpers stay next to their tests (``fed_helpers``, ``modelkit``, ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fedseg.data.synth import SynthConfig
from fedseg.federation.engine.launcher import free_port

__all__ = ["SRC", "TINY_SYNTH", "fedseg_env", "free_port", "run_fedseg"]

SRC = Path(__file__).resolve().parents[1] / "src"
TINY_SYNTH = SynthConfig(sites=3, cases_per_site=4, seed=0, spacing=4.0)


def fedseg_env(extra: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
    """Environment of a ``fedseg`` subprocess: this checkout's sources first on the path, a
    200-column terminal (rich tables not wrapped), no colours, no Flower telemetry, then
    ``extra``. ``inherit=False`` starts from an empty environment (e.g. to hide packages)."""
    base = dict(os.environ) if inherit else {}
    path = os.pathsep.join(p for p in (str(SRC), base.get("PYTHONPATH", "")) if p)
    return {
        **base,
        "PYTHONPATH": path,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        **(extra or {}),
    }


def run_fedseg(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedseg ARGS`` to completion; output captured as text, never raises on
    a non-zero exit (tests assert on ``returncode``). ``timeout`` only guards against hangs."""
    return subprocess.run(
        [sys.executable, "-m", "fedseg", *map(str, args)],
        capture_output=True, text=True, check=False, cwd=cwd, timeout=timeout,
        env=fedseg_env(env, inherit=inherit_env),
    )  # fmt: skip
