"""The shared test helpers keep their one rule each."""

from __future__ import annotations

import os
from pathlib import Path

from fedseg.federation.engine import launcher
from tests import helpers


def test_free_port_is_the_launchers() -> None:
    assert helpers.free_port is launcher.free_port


def test_fedseg_env_puts_this_checkout_first_and_keeps_overrides() -> None:
    env = helpers.fedseg_env({"COLUMNS": "80"})
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(helpers.SRC)
    assert (Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "fedseg" / "__init__.py").is_file()
    assert env["COLUMNS"] == "80" and env["NO_COLOR"] == "1"
    bare = helpers.fedseg_env({"PATH": "/usr/bin"}, inherit=False)
    assert set(bare) == {"PYTHONPATH", "COLUMNS", "NO_COLOR", "FLWR_TELEMETRY_ENABLED", "PATH"}


def test_tiny_sites_are_the_tiny_dataset_sites(tiny_dataset, tiny_sites) -> None:  # type: ignore[no-untyped-def]
    root, cases = tiny_dataset
    assert sorted(tiny_sites) == ["site1", "site2", "site3"] == sorted(cases)
    assert all(tiny_sites[s] == root / s for s in tiny_sites)


def test_xdist_groups_keep_engine_and_export_tests_together() -> None:
    from tests.conftest import xdist_group

    assert xdist_group("tests/federation/test_processes.py::test_x") == "engine"
    assert xdist_group("tests/deploy/test_deployment.py::test_y[a]") == "engine-b"
    assert xdist_group("tests/export/test_tiling.py::test_z") == "openvino"
    assert xdist_group("tests/data/test_labels.py::test_w") == "tests/data/test_labels.py::test_w"
