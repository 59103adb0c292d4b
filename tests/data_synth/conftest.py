"""Shared synthetic data for the synth tests: one small 4 mm data set per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.synth import SynthConfig, generate_dataset

SITES = 3
CASES = 4


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    return SynthConfig(sites=SITES, cases_per_site=CASES, seed=0, spacing=4.0)


@pytest.fixture(scope="session")
def tiny_dataset(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: SynthConfig
) -> tuple[Path, dict[str, list[Path]]]:
    """(root, site -> case folders) of a 3-site x 4-case data set on the 60x60x39 grid."""
    root = tmp_path_factory.mktemp("synth")
    return root, generate_dataset(root, tiny_config)
