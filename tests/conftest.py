"""Fixtures shared by every test folder (plain helpers are in ``tests/helpers.py``).

Session-scoped data is written once per test process (once per xdist worker): tests that
use it only read it or write run-specific files beside it (``fedseg_split.json``, which
every reader computes identically, and ``.fedseg/<run id>/``).

``make test`` runs four xdist workers on the two cores (engine tests wait on polls) with
``--dist loadgroup``; ``XDIST_GROUPS`` is the one place that says which test modules stay
together on one worker, in order:

- ``engine`` and ``engine-b``: the tests that run the Flower engine in real processes
  (SuperLink, SuperNodes, app processes). They wait on rounds and connections more than they
  compute; each group runs one test at a time, the two groups side by side (one group alone
  was the suite's tail: 41 min of a 42 min run). They are the largest work units, which
  xdist hands out first (largest first), so two workers take them at the start.
- ``openvino``: the export tests share one trained model and its exports (session fixtures).
- a module with a module-scoped fixture is its own group, so the fixture is built once.

Every other test is a work unit of its own (as ``--dist load``).
"""

from __future__ import annotations

import os

# One OpenMP thread per test process (and, through the environment, per fedseg process a
# test starts), set before torch is first imported. Three xdist workers plus their
# subprocesses share two cores: with torch's default of one thread per core, the OpenMP
# threads of concurrent processes spin-wait on each other. Three concurrent processes each
# training the demo network for 30 steps took 168 s and 89 CPU-s each with two threads,
# 5 s and 8 CPU-s with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path

import pytest

from fedseg.data.synth import generate_dataset
from tests.helpers import TINY_SYNTH


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    """(root, site -> case folders) of ``TINY_SYNTH``: 3 sites x 4 labelled cases at 4 mm."""
    root = tmp_path_factory.mktemp("tiny_synth")
    return root, generate_dataset(root, TINY_SYNTH)


@pytest.fixture(scope="session")
def tiny_sites(tiny_dataset: tuple[Path, dict[str, list[Path]]]) -> dict[str, Path]:
    """site name -> data folder of the three ``tiny_dataset`` sites."""
    root, sites = tiny_dataset
    return {s: root / s for s in sites}


#: test file (or folder) -> its group under ``--dist loadgroup`` (see the module docstring).
XDIST_GROUPS = {
    "tests/federation/test_processes.py": "engine",
    "tests/federation/test_sim_engine_e2e.py": "engine",
    "tests/federation/test_demo.py": "engine",
    "tests/deploy/test_deploy_plan.py": "engine-b",
    "tests/deploy/test_deployment.py": "engine-b",
    "tests/strategies/test_sequential_flower.py": "engine-b",
    "tests/tracking/test_end_to_end.py": "engine-b",
    "tests/dashboard/test_dashboard_simulate.py": "engine",
    "tests/privacy/test_he_e2e.py": "engine-b",
    "tests/privacy/test_secagg_e2e.py": "engine-b",
    "tests/privacy/test_secagg_dropout_e2e.py": "engine-b",
    "tests/synthesis/test_synthesis_e2e.py": "engine-b",
    "tests/export/": "openvino",
    "tests/data/test_data_cli.py": "data_cli",
}


def xdist_group(nodeid: str) -> str:
    """The work unit of a test: its ``XDIST_GROUPS`` group, else the test alone."""
    path = nodeid.split("::", 1)[0]
    return next((g for prefix, g in XDIST_GROUPS.items() if path.startswith(prefix)), nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` grouped by ``XDIST_GROUPS``: xdist 3.8 marks a group by renaming
    ``item._nodeid``, which pytest 9 no longer reads (node ids live in ``_id``), so its own
    ``xdist_group`` marks are silently ignored here."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return PathGroupScheduling(config, log)  # type: ignore[arg-type]
