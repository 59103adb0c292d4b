"""Fixtures of the federation tests: a tiny synthetic 3-site data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.synth.generate import make_tiny_dataset

SITES = ("site1", "site2", "site3")


@pytest.fixture(scope="session")
def tiny_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three synthetic sites (4 cases each, 4 mm voxels), written once per session."""
    root = tmp_path_factory.mktemp("sites")
    make_tiny_dataset(root, sites=3, cases_per_site=4, seed=0)
    return {s: root / s for s in SITES}
