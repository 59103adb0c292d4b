"""Fixtures for the model tests (helpers live in ``modelkit``, importable by the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.data.cases import write_case
from fedseg.model.segmenter import Member
from tests.model.modelkit import AFFINE, TINY_ROI, oracle_case, oracle_predictor, tiny_model


@pytest.fixture
def oracle() -> Member:
    return Member(oracle_predictor, TINY_ROI, "oracle")


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """One BraTS 2021 case folder, 26x30x22 voxels (not a multiple of the tile)."""
    image, label = oracle_case((26, 30, 22), seed=1)
    return write_case(tmp_path / "site", "case001", image, label, AFFINE)


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A data folder with three labelled cases of different grid sizes."""
    root = tmp_path / "site"
    for i, shape in enumerate([(26, 30, 22), (20, 20, 20), (34, 18, 24)]):
        image, label = oracle_case(shape, seed=10 + i)
        write_case(root, f"case{i:03d}", image, label, AFFINE)
    return root


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "models" / "tiny.pt")
