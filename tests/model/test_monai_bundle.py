"""`fedseg release`: the MONAI bundle's files, its network program, its carried code, and
(slow) the bundle run by MONAI without fedseg giving `fedseg segment`'s label map."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.errors import FedsegError
from fedseg.model.model_file import load_model
from fedseg.model.monai_bundle import (
    MANDATORY_METADATA,
    VENDORED,
    export_network,
    vendored_source,
    write_monai_bundle,
)
from tests.helpers import run_fedseg
from tests.model.modelkit import tiny_model

RUNNER = Path(__file__).with_name("fedseg_free_bundle_run.py")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    model = tiny_model(root / "tiny.pt", roi=(16, 16, 24))
    return write_monai_bundle(model, root / "bundle", version="2.1.0")


def test_bundle_holds_what_monai_expects(bundle: Path) -> None:
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {
        "configs/metadata.json", "configs/inference.json", "models/model.pt",
        "models/model.pt2", "docs/README.md",
    } <= names  # fmt: skip
    carried = {f"scripts/fedseg_runtime/{m.replace('.', '/')}.py" for m in VENDORED}
    assert carried <= names
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert set(MANDATORY_METADATA) <= set(meta)
    assert meta["version"] == "2.1.0"
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 4
    assert image["channel_def"] == {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"}
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    mf = load_model(bundle / "models" / "model.pt")  # the fedseg model file itself
    assert meta["fedseg"]["roi"] == [16, 16, 24] == list(mf.roi)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["labels"] == "brats2021"
    assert config["label_values"] == {"brats2021": [1, 2, 4], "brats2023": [1, 2, 3]}
    assert config["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert config["file_keys"]["brats2023"]["flair"] == "-t2f"
    for path in bundle.joinpath("scripts").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) fedseg\b", path.read_text(), re.M), path


def test_release_refuses_a_used_folder_and_unknown_labels(bundle: Path, tmp_path: Path) -> None:
    model = bundle / "models" / "model.pt"
    with pytest.raises(FedsegError, match="not an empty folder"):
        write_monai_bundle(model, bundle)
    with pytest.raises(FedsegError, match="use brats2021 or brats2023"):
        write_monai_bundle(model, tmp_path / "b", labels="msd")
    assert not (tmp_path / "b").exists()


def test_exported_network_equals_the_network_on_every_tile_shape(tmp_path: Path) -> None:
    mf = load_model(tiny_model(tmp_path / "m.pt", roi=(16, 16, 24)))
    program = torch.export.load(str(export_network(mf, tmp_path / "m.pt2"))).module()
    net = mf.build()
    # sides are multiples of 2**depth (4) up to the tile; one side of 4 is allowed
    for shape in [(1, 4, 16, 16, 24), (2, 4, 8, 12, 4), (1, 4, 4, 16, 8)]:
        x = torch.randn(shape)
        with torch.inference_mode():
            assert torch.equal(program(x), net(x)), shape


def test_vendored_source_points_fedseg_imports_at_the_bundle() -> None:
    text = vendored_source(
        "from fedseg.data.labels import ET\n    from fedseg.errors import FedsegError\n", "x"
    )
    assert text == (
        "from scripts.fedseg_runtime.data.labels import ET\n"
        "    from scripts.fedseg_runtime.errors import FedsegError\n"
    )
    with pytest.raises(FedsegError, match="does not carry; add it to VENDORED"):
        vendored_source("from fedseg.model.compute import ComputeConfig\n", "model.x")
    with pytest.raises(FedsegError, match="does not carry"):
        vendored_source("from fedseg import __version__\n", "model.x")


def _run_bundle_without_fedseg(bundle: Path, case: Path, out: Path, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PYTHON")}
    cwd = out.parent / f"cwd-{out.name}"
    cwd.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-I", str(RUNNER), "run",
         "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--case_dir", str(case), "--output_dir", str(out),
         *extra],
        capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0 and "FEDSEG-FREE" in proc.stdout, proc.stdout + proc.stderr


def _labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), np.asarray(img.affine)


@pytest.mark.slow
def test_bundle_runs_without_fedseg_and_writes_segments_label_map(tmp_path: Path) -> None:
    case = make_tiny_dataset(tmp_path / "data", sites=1, cases_per_site=1)["site1"][0]
    # tiles of at most 32x32x24 over the 35x41x31 brain box: 8 overlapping tiles, blended
    model = tiny_model(tmp_path / "tiny.pt", roi=(32, 32, 24))
    bundle = tmp_path / "bundle"
    proc = run_fedseg("release", model, bundle, timeout=900)
    assert proc.returncode == 0, proc.stderr
    ref = tmp_path / "segment.nii.gz"
    proc = run_fedseg("segment", "-m", model, case, "-o", ref, "--device", "cpu", timeout=900)
    assert proc.returncode == 0, proc.stderr
    expected, affine = _labels(ref)
    assert set(np.unique(expected)) >= {0, 4} and len(np.unique(expected)) >= 3

    _run_bundle_without_fedseg(bundle, case, tmp_path / "out")
    got, got_affine = _labels(tmp_path / "out" / f"{case.name}_seg.nii.gz")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)  # voxel for voxel
    np.testing.assert_allclose(got_affine, affine)

    _run_bundle_without_fedseg(bundle, case, tmp_path / "out23", "--labels", "brats2023")
    got23, _ = _labels(tmp_path / "out23" / f"{case.name}_seg.nii.gz")
    np.testing.assert_array_equal(got23, np.where(expected == 4, 3, expected))


def test_case_files_and_label_values_of_the_runtime(tmp_path: Path) -> None:
    from fedseg.data.cases import FILE_KEYS
    from fedseg.data.labels import Layout
    from fedseg.model.bundle_runtime import case_files, label_values

    keys = {
        layout.value: {m: FILE_KEYS[layout][m] for m in ("t1", "t1ce", "t2", "flair")}
        for layout in (Layout.BRATS2021, Layout.BRATS2023)
    }
    case = tmp_path / "BraTS-GLI-00001-000"
    case.mkdir()
    for key in ("-t1n", "-t1c", "-t2w", "-t2f"):
        (case / f"{case.name}{key}.nii.gz").touch()
    found = case_files(case, keys)
    assert [Path(found[m]).name.split("-")[-1] for m in ("t1", "t1ce", "t2", "flair")] == [
        "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz", "t2f.nii.gz",
    ]  # fmt: skip
    (case / f"{case.name}-t2f.nii.gz").unlink()
    with pytest.raises(FedsegError, match="not a complete BraTS case folder"):
        case_files(case, keys)
    values = {"brats2021": [1, 2, 4], "brats2023": [1, 2, 3]}
    assert label_values("brats2023", values) == [1, 2, 3]
    with pytest.raises(FedsegError, match="use --labels brats2021 or brats2023"):
        label_values("msd", values)
