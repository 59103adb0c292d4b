"""The synth tests' view of the shared tiny data set (``tiny_dataset`` in the root conftest)."""

from __future__ import annotations

import pytest

from fedseg.data.synth import SynthConfig
from tests.helpers import TINY_SYNTH


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    """The config ``tiny_dataset`` was written with (3 sites x 4 cases, seed 0, 4 mm)."""
    return TINY_SYNTH
