"""Fixtures shared by every test folder (plain helpers are in ``tests/helpers.py``).

Session-scoped data is written once per test process (once per xdist worker): tests that
use it only read it or write run-specific files beside it (``fedseg_split.json``, which
every reader computes identically, and ``.fedseg/<run id>/``).
"""

from __future__ import annotations

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
