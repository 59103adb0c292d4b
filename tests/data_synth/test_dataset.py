"""The written data set: layout, loadable cases, label sanity, reproducibility."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedseg.data.cases import MODALITIES, discover_cases, load_case
from fedseg.data.synth import SiteProfile, SynthConfig, generate_dataset, make_tiny_dataset
from fedseg.errors import FedsegError


def test_layout_and_cases_load(tiny_dataset: tuple[Path, dict[str, list[Path]]]) -> None:
    root, result = tiny_dataset
    assert sorted(result) == ["site1", "site2", "site3"]
    ids = []
    for site, folders in result.items():
        cases = discover_cases(root / site)
        assert [c.case_id for c in cases] == [f"{site}_{i:03d}" for i in range(4)]
        for case, folder in zip(cases, folders, strict=True):
            assert case.complete and case.label is not None and case.folder == folder
            for m in MODALITIES:
                assert (folder / f"{case.case_id}_{m}.nii.gz").is_file()
            vols = load_case(case)
            assert vols.image.shape == (4, 60, 60, 39)
            assert vols.label is not None and vols.label.shape == (60, 60, 39)
            np.testing.assert_allclose(vols.spacing, [4.0, 4.0, 4.0])
            ids.append(case.case_id)
    assert len(set(ids)) == len(ids) == 12


def test_labels_valid_inside_brain_and_all_regions(
    tiny_dataset: tuple[Path, dict[str, list[Path]]],
) -> None:
    root, _ = tiny_dataset
    complete = 0
    cases = [c for s in ("site1", "site2", "site3") for c in discover_cases(root / s)]
    for case in cases:
        vols = load_case(case)
        assert vols.label is not None
        values = set(np.unique(vols.label).tolist())
        assert values <= {0, 1, 2, 4}
        brain = np.all(vols.image > 0, axis=0)
        # Skull-stripped: all four modalities share one brain mask, zero outside it.
        assert np.array_equal(brain, np.any(vols.image != 0, axis=0))
        litres = brain.sum() * 4.0**3 / 1e6
        assert 1.1 < litres < 1.7, f"brain volume {litres:.2f} L is not an adult brain's"
        assert not np.any(vols.label[~brain]), "label outside the brain"
        assert 4 in values and 2 in values, "every case has enhancing tumor and edema"
        complete += values == {0, 1, 2, 4}
    assert complete >= len(cases) - 2, f"only {complete}/{len(cases)} cases have all three labels"


def test_synth_yaml_records_config_and_profiles(
    tiny_dataset: tuple[Path, dict[str, list[Path]]], tiny_config: SynthConfig
) -> None:
    root, _ = tiny_dataset
    doc = yaml.safe_load((root / "synth.yaml").read_text())
    again = SynthConfig(**doc["config"])
    assert again == tiny_config.model_copy(update={"profiles": None})
    profiles = [SiteProfile(**p) for p in doc["profiles"]]
    assert profiles == tiny_config.site_profiles()
    assert doc["grid_shape"] == [60, 60, 39]
    assert [c["case"] for c in doc["cases"]["site2"]] == [f"site2_{i:03d}" for i in range(4)]
    # Re-running from the recorded config with the recorded profiles gives the same cases.
    assert SynthConfig(**doc["config"], profiles=profiles).site_profiles() == profiles


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.nii.gz"))
    }


def test_same_seed_identical_files_other_seed_differs(tmp_path: Path) -> None:
    a = make_tiny_dataset(tmp_path / "a", sites=2, cases_per_site=1, seed=5)
    make_tiny_dataset(tmp_path / "b", sites=2, cases_per_site=1, seed=5)
    make_tiny_dataset(tmp_path / "c", sites=2, cases_per_site=1, seed=6)
    da, db, dc = (_digest(tmp_path / n) for n in "abc")
    assert len(da) == 2 * 5 and da == db
    assert set(dc) == set(da) and all(dc[k] != da[k] for k in da)
    assert (tmp_path / "a" / "synth.yaml").read_text() == (
        tmp_path / "b" / "synth.yaml"
    ).read_text()
    assert [p.name for p in a["site2"]] == ["site2_000"]


def test_refuses_to_overwrite_then_overwrites(tmp_path: Path) -> None:
    config = SynthConfig(sites=1, cases_per_site=1, spacing=4.0)
    generate_dataset(tmp_path, config)
    with pytest.raises(FedsegError, match="--overwrite"):
        generate_dataset(tmp_path, config)
    again = generate_dataset(tmp_path, config, overwrite=True)
    assert [p.name for p in again["site1"]] == ["site1_000"]


def test_grid_shapes_and_bad_input() -> None:
    assert SynthConfig(spacing=1.0).grid_shape() == (240, 240, 155)
    assert SynthConfig(spacing=2.0).grid_shape() == (120, 120, 78)
    assert SynthConfig(spacing=4.0).grid_shape() == (60, 60, 39)
    with pytest.raises(FedsegError, match=r"numbered 1\.\.3"):
        SynthConfig(sites=3, bad_sites=[4]).site_profiles()
    with pytest.raises(ValueError, match="cases_per_site"):
        SynthConfig(sites=3, cases_per_site=[2, 2])
