"""Fixtures for the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import make_coordinator


@pytest.fixture
def coordinator(tmp_path: Path) -> Path:
    return make_coordinator(tmp_path / "coord")
