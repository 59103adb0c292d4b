"""Fixtures of the strategy tests: four tiny synthetic sites (sequential and sampled plans
need more sites than the shared three of ``tiny_sites``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.synth.generate import make_tiny_dataset

FOUR_SITES = ("site1", "site2", "site3", "site4")


@pytest.fixture(scope="session")
def four_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four synthetic sites (4 cases each, 4 mm voxels) written once per session."""
    root = tmp_path_factory.mktemp("four_sites")
    make_tiny_dataset(root, sites=4, cases_per_site=4, seed=0)
    return {s: root / s for s in FOUR_SITES}
