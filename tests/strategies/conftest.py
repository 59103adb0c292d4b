"""Fixtures of the plan tests: tiny synthetic sites, tiny plans, an in-process array transport."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # strategy_helpers

from fedseg.data.synth.generate import make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four synthetic sites (4 cases each, 4 mm voxels) written once per session."""
    root = tmp_path_factory.mktemp("plan_sites")
    make_tiny_dataset(root, sites=4, cases_per_site=4, seed=0)
    return {s: root / s for s in ("site1", "site2", "site3", "site4")}
