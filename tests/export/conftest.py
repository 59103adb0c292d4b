"""Session fixtures for the export tests: one site, one trained tiny model, its exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.model.export import ExportConfig, export_openvino
from fedseg.model.openvino_backend import ExportMeta
from tests.export.exportkit import synth_site, train_tiny


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_site(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def trained(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(site, tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="session")
def fp32_export(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "fp32"
    export_openvino(trained, out, ExportConfig())
    return out


@pytest.fixture(scope="session")
def int8_export(
    trained: Path, site: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ExportMeta]:
    out = tmp_path_factory.mktemp("exports") / "int8"
    meta = export_openvino(trained, out, ExportConfig(int8=True), calibration=site)
    return out, meta
