"""Whole-case segmentation: geometry kept, labels right, ensembles, the CLI and its errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data.cases import MODALITIES, discover_cases, load_case
from fedseg.errors import FedsegError
from fedseg.model.inference import probabilities_to_labels
from fedseg.model.segmenter import (
    Member,
    ModelSet,
    output_labels,
    probability_paths,
    resolve_case,
    segment_case,
    write_segmentation,
)
from tests.helpers import run_fedseg
from tests.model.modelkit import AFFINE, TINY_ROI, tiny_model


def _const(value: float) -> Member:
    def predict(batch: np.ndarray) -> np.ndarray:
        return np.full((batch.shape[0], 3, *batch.shape[2:]), value, np.float32)

    return Member(predict, TINY_ROI, f"const{value}")


def test_oracle_segmentation_recovers_the_label_on_the_input_grid(
    case_dir: Path, oracle: Member, tmp_path: Path
) -> None:
    case = resolve_case([case_dir])
    ref = load_case(case).label
    seen: list[int] = []
    models = ModelSet((oracle,))
    seg = segment_case(case, models, on_tiles=seen.append)
    assert seg.labels.shape == (26, 30, 22) and seg.labels.dtype == np.uint8
    np.testing.assert_array_equal(seg.labels, ref)  # crop undone, labels 4/1/2 rebuilt
    assert set(np.unique(seg.labels)) == {0, 1, 2, 4}
    assert sum(seen) == models.tile_count(load_case(case).image, 0.5)
    out = write_segmentation(seg, tmp_path / "out" / "seg.nii.gz", tmp_path / "probs")
    img = nib.load(out[0])
    np.testing.assert_allclose(img.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(img.dataobj), ref)
    assert [p.name for p in out[1:]] == [f"case001_{r}_prob.nii.gz" for r in ("ET", "TC", "WT")]


def test_ensemble_mean_and_triplet(case_dir: Path, oracle: Member) -> None:
    case = resolve_case([case_dir])
    alone = segment_case(case, ModelSet((oracle,))).probabilities
    mean = segment_case(case, ModelSet((oracle, _const(0.2)))).probabilities
    brain = load_case(case).image.any(axis=0)
    np.testing.assert_allclose(mean[:, brain], (alone[:, brain] + 0.2) / 2, atol=1e-6)
    trip = segment_case(case, ModelSet((_const(0.1), oracle, _const(0.9)), "triplet"))
    np.testing.assert_allclose(trip.probabilities[0][brain], 0.1, atol=1e-6)
    np.testing.assert_allclose(trip.probabilities[1], alone[1], atol=1e-6)
    np.testing.assert_allclose(trip.probabilities[2][brain], 0.9, atol=1e-6)
    with pytest.raises(FedsegError, match="triplet needs exactly 3 models"):
        ModelSet((oracle,), "triplet")


def test_ensemble_of_model_files_is_the_mean(case_dir: Path, tmp_path: Path) -> None:
    a, b = tiny_model(tmp_path / "a.pt", seed=1), tiny_model(tmp_path / "b.pt", seed=2)
    case = resolve_case([case_dir])
    roi = (24, 28, 20)  # one tile covers the brain crop (22, 26, 19): keeps the test quick
    pa = segment_case(case, ModelSet.from_files([a], roi=roi)).probabilities
    pb = segment_case(case, ModelSet.from_files([b], roi=roi)).probabilities
    pab = segment_case(case, ModelSet.from_files([a, b], roi=roi)).probabilities
    assert not np.allclose(pa, pb)
    np.testing.assert_allclose(pab, (pa + pb) / 2, atol=1e-5)


def test_resolve_case_inputs(case_dir: Path, tmp_path: Path) -> None:
    files = [case_dir / f"case001_{m}.nii.gz" for m in MODALITIES]
    case = resolve_case(files)
    assert case.case_id == "case001" and case.images["flair"].path == files[3]
    with pytest.raises(FedsegError, match="give a case folder or four files"):
        resolve_case(files[:2])
    with pytest.raises(FedsegError, match="image file not found"):
        resolve_case([*files[:3], tmp_path / "nope.nii.gz"])
    with pytest.raises(FedsegError, match="holds 3 cases"):
        resolve_case([_site_with(tmp_path, 3)])


def _site_with(tmp_path: Path, n: int) -> Path:
    src = next(iter(discover_cases(tmp_path / "site")))
    root = tmp_path / "multi"
    for i in range(n):
        d = root / f"c{i}"
        d.mkdir(parents=True)
        for m in MODALITIES:
            (d / f"c{i}_{m}.nii.gz").write_bytes(src.images[m].path.read_bytes())
    return root


@pytest.mark.slow
def test_cli_segments_a_folder_with_probabilities(
    case_dir: Path, model_file: Path, tmp_path: Path
) -> None:
    out, probs = tmp_path / "seg.nii.gz", tmp_path / "probs"
    proc = run_fedseg("segment", "--model", model_file, case_dir, "--out", out,
                      "--probabilities", probs, "--overlap", "0.25")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    img = nib.load(out)
    labels = np.asarray(img.dataobj)
    assert labels.shape == (26, 30, 22) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, AFFINE)
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
    maps = []
    for path in probability_paths(probs, "case001").values():
        p = nib.load(path)
        assert p.get_data_dtype() == np.float32
        np.testing.assert_allclose(p.affine, AFFINE)
        maps.append(np.asarray(p.dataobj))
    stack = np.stack(maps)
    assert stack.shape == (3, 26, 30, 22) and stack.min() >= 0 and stack.max() <= 1
    np.testing.assert_array_equal(probabilities_to_labels(stack), labels)


@pytest.mark.slow
def test_cli_four_files_equals_folder(case_dir: Path, model_file: Path, tmp_path: Path) -> None:
    files = [case_dir / f"case001_{m}.nii.gz" for m in MODALITIES]
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert run_fedseg("segment", "-m", model_file, *files, "-o", a).returncode == 0
    assert run_fedseg("segment", "-m", model_file, case_dir, "-o", b).returncode == 0
    np.testing.assert_array_equal(nib.load(a).get_fdata(), nib.load(b).get_fdata())
    np.testing.assert_allclose(nib.load(a).affine, AFFINE)


@pytest.mark.slow
def test_cli_errors_are_one_line_exit_2(case_dir: Path, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    proc = run_fedseg("segment", "--model", tmp_path / "missing.pt", case_dir, "--out", out)
    assert proc.returncode == 2 and "model file not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    (case_dir / "case001_flair.nii.gz").unlink()
    proc = run_fedseg("segment", "--model", model_file, case_dir, "--out", out)
    assert proc.returncode == 2 and "missing modalities flair" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = run_fedseg("segment", "--model", model_file, case_dir, "--out", tmp_path / "seg.png")
    assert proc.returncode == 2 and "must be a NIfTI file name" in proc.stderr


def test_brats2023_labels_change_et_4_to_3_and_nothing_else(
    case_dir: Path, oracle: Member, tmp_path: Path
) -> None:
    seg = segment_case(resolve_case([case_dir]), ModelSet((oracle,)))
    assert set(np.unique(seg.labels)) == {0, 1, 2, 4}
    a = write_segmentation(seg, tmp_path / "a.nii.gz")[0]
    b = write_segmentation(seg, tmp_path / "b.nii.gz", labels=output_labels("brats2023"))[0]
    old, new = np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)
    np.testing.assert_array_equal(new, np.where(old == 4, 3, old))
    assert set(np.unique(new)) == {0, 1, 2, 3}
    np.testing.assert_allclose(nib.load(b).affine, nib.load(a).affine)
    with pytest.raises(FedsegError, match="use brats2021 or brats2023"):
        output_labels("msd")
    out = tmp_path / "c.nii.gz"
    proc = run_fedseg("segment", "-m", tmp_path / "none.pt", case_dir, "-o", out, "--labels", "msd")
    assert proc.returncode != 0 and "use brats2021 or brats2023" in proc.stderr
