"""The harmonized pipeline on a synthetic case moved by known rigid transforms: it must
undo them (registration accuracy), write loadable BraTS cases, a QC picture, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from typer.testing import CliRunner

from fedseg.cli.main import _register, app
from fedseg.data.atlas import Atlas
from fedseg.data.cases import MODALITIES, discover_cases, load_case
from fedseg.errors import FedsegError
from fedseg.intake import brain_extraction, itk_bridge
from fedseg.intake.config import PreprocessConfig
from fedseg.intake.preprocess import PARTIAL, SIDE_DIR, preprocess_cases
from tests.intake.conftest import atlas_truth, native_transform, write_moved_case

_register()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.mark.slow
def test_registration_recovers_known_motions(atlas: Atlas, tmp_path: Path) -> None:
    spacing = 3.0
    truth, label, grid = atlas_truth(atlas, spacing)
    write_moved_case(tmp_path / "in", truth, label, grid, "synth_001")
    cfg = PreprocessConfig(spacing=spacing, brain_extractor="none")
    report = preprocess_cases(tmp_path / "in", tmp_path / "out", cfg)
    assert [r.status for r in report.results] == ["done"], report.to_json()
    out = load_case(discover_cases(tmp_path / "out")[0])
    assert out.image.shape == (4, 80, 80, 52)
    np.testing.assert_allclose(out.affine, itk_bridge.affine_of(grid), atol=1e-6)

    numbers: dict[str, float] = {}
    points = np.argwhere(truth["t1"] > 1)[::50]
    world = [grid.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in points]
    for i, m in enumerate(MODALITIES):
        # Brain mask of an image: above half its median brain intensity (edges blur both ways).
        thr = 0.5 * np.median(truth[m][truth[m] > 0])
        numbers[f"dice_brain_{m}"] = dice(out.image[i] > thr, truth[m] > thr)
        found = sitk.ReadTransform(str(tmp_path / "out/synth_001" / SIDE_DIR / f"{m}_to_atlas.tfm"))
        true = native_transform(m).GetInverse()
        err = [
            np.linalg.norm(np.subtract(found.TransformPoint(p), true.TransformPoint(p)))
            for p in world
        ]
        numbers[f"error_mm_mean_{m}"] = float(np.mean(err))
        numbers[f"error_mm_max_{m}"] = float(np.max(err))
    assert out.label is not None
    for name, values in {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}.items():
        numbers[f"dice_tumor_{name}"] = dice(np.isin(out.label, values), np.isin(label, values))
    numbers["seconds_per_case"] = report.results[0].seconds
    print(json.dumps({k: round(v, 4) for k, v in numbers.items()}, indent=1))
    for m in MODALITIES:
        assert numbers[f"dice_brain_{m}"] > 0.95, numbers
        assert numbers[f"error_mm_mean_{m}"] < spacing / 2, numbers
    for name in ("wt", "tc", "et"):
        assert numbers[f"dice_tumor_{name}"] > 0.85, numbers


@pytest.mark.slow
def test_cli_default_pipeline_masks_resumes_and_draws_qc(atlas: Atlas, tmp_path: Path) -> None:
    spacing = 4.0
    truth, label, grid = atlas_truth(atlas, spacing)
    write_moved_case(tmp_path / "in", truth, label, grid, "synth_001", spacing=3.5)
    partial = tmp_path / "in" / "synth_002"
    shutil.copytree(tmp_path / "in" / "synth_001", partial)
    for f in partial.iterdir():
        f.rename(partial / f.name.replace("synth_001", "synth_002"))
    (partial / "synth_002_flair.nii.gz").unlink()
    leftover = tmp_path / "out" / PARTIAL / "synth_001"  # as if a run had been killed
    leftover.mkdir(parents=True)
    (leftover / "synth_001_t1.nii.gz").write_bytes(b"half-written")

    args = [
        "intake",
        "preprocess",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--spacing",
        str(spacing),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        "synth_001: done" in result.output and "synth_002: skipped (missing flair)" in result.output
    )
    assert not (tmp_path / "out" / PARTIAL).exists()
    cases = discover_cases(tmp_path / "out")
    assert [c.case_id for c in cases] == ["synth_001"]
    out = load_case(cases[0])
    assert out.image.shape == (4, 60, 60, 39)
    # Default brain extraction: the atlas brain mask on the output grid (up to one voxel of
    # partial-volume difference at its edge, depending on how the mask is downsampled).
    tissue = itk_bridge.from_array(atlas.csf + atlas.gm + atlas.wm, atlas.affine)
    coarse = itk_bridge.reference_grid(atlas.affine, atlas.t1.shape, spacing)
    brain = itk_bridge.to_array(sitk.Resample(tissue, coarse)) > 0.5
    assert not out.image[:, ~ndimage.binary_dilation(brain)].any()
    assert (out.image[:, ndimage.binary_erosion(brain)] > 0).mean() > 0.95
    png = tmp_path / "out/synth_001" / SIDE_DIR / "qc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    summary = json.loads((png.parent / "summary.json").read_text())
    assert summary["spacing_mm"] == spacing and summary["brain_extractor"] == "atlas"

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "synth_001: exists" in again.output


def test_brain_extractor_registry(tmp_path: Path) -> None:
    with pytest.raises(FedsegError, match="unknown brain extractor 'hdbet'"):
        brain_extraction.get("hdbet")
    assert {"atlas", "none"} <= set(brain_extraction.available())

    def bright(inp: brain_extraction.BrainExtractionInput) -> np.ndarray:
        return inp.volumes[0] > 1.0

    brain_extraction.register("bright-voxels", bright)
    vols = np.zeros((4, 3, 3, 3), np.float32)
    vols[0, 1, 1, 1] = 5
    inp = brain_extraction.BrainExtractionInput(vols, np.eye(4), np.ones((3, 3, 3), bool))
    mask = brain_extraction.apply_mask(brain_extraction.get("bright-voxels"), inp)
    assert mask.sum() == 1 and mask[1, 1, 1]
    brain_extraction.register("wrong-shape", lambda inp: np.ones((2, 2, 2), bool))
    with pytest.raises(FedsegError, match="shape"):
        brain_extraction.apply_mask(brain_extraction.get("wrong-shape"), inp)
    with pytest.raises(FedsegError, match="must differ"):
        preprocess_cases(tmp_path, tmp_path, PreprocessConfig())
