"""`fedseg sample`: full BraTS cases drawn from phantom label maps (every image `.syn`,
header-marked), the label maps copied byte for byte, a provenance file naming the generator,
its run and round and the label source."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from fedseg.data.cases import MODALITIES
from fedseg.data.nifti import read_descrip
from fedseg.errors import FedsegError
from fedseg.synth.sample import PROVENANCE_FILE, choose_cases, find_label_cases, sample_dataset
from tests.helpers import run_fedseg
from tests.synthesis.servekit import phantoms_from, tiny_generator


@pytest.fixture
def phantoms(tiny_sites: dict[str, Path], tmp_path: Path) -> Path:
    return phantoms_from(tiny_sites["site2"], tmp_path / "phantoms")


def test_sample_writes_full_synthetic_cases_labels_and_provenance(
    phantoms: Path, tmp_path: Path
) -> None:
    gen, gf = tiny_generator(tmp_path / "g.pt")
    out = tmp_path / "set"
    proc = run_fedseg("sample", "--generator", gen, "--labels", phantoms, "--out", out,
                      "--cases", "3", "--seed", "5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == 3
    for folder in folders:
        cid = folder.name
        src = phantoms / cid / f"{cid}_seg.nii.gz"
        assert (folder / f"{cid}_seg.nii.gz").read_bytes() == src.read_bytes()
        brain = np.asarray(nib.load(phantoms / cid / f"{cid}_brain.nii.gz").dataobj) > 0
        for m in MODALITIES:
            img = folder / f"{cid}_{m}.syn.nii.gz"
            assert read_descrip(img) == f"fedseg synthetic {m} gen {gf.weights_hash[:16]}"
            vol = np.asarray(nib.load(img).dataobj)
            np.testing.assert_allclose(nib.load(img).affine, nib.load(src).affine)
            assert vol.shape == brain.shape and vol[brain].any() and not vol[~brain].any()
        assert not list(folder.glob(f"{cid}_t1.nii.gz"))  # no file passes for a real image
    prov = yaml.safe_load((out / PROVENANCE_FILE).read_text())
    assert prov["generator"]["weights_hash"] == gf.weights_hash
    assert prov["generator"]["run"] == "run-test" and prov["generator"]["round"] == "3"
    assert prov["labels"]["source"] == str(phantoms.resolve())
    assert sorted(prov["cases"]) == [f.name for f in folders] and prov["seed"] == 5
    # the same seed draws the same label maps
    again = sample_dataset(gf, phantoms, tmp_path / "again", n=3, seed=5)
    assert again.cases == [f.name for f in folders]
    check = run_fedseg("data", "check", out)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sample_refusals(phantoms: Path, tmp_path: Path) -> None:
    _, gf = tiny_generator(tmp_path / "g.pt")
    with pytest.raises(FedsegError, match="only 4 label maps"):
        sample_dataset(gf, phantoms, tmp_path / "a", n=9)
    _, partial = tiny_generator(tmp_path / "p.pt", trained=["t1", "t2", "flair"])
    with pytest.raises(FedsegError, match="t1ce bank was never trained"):
        sample_dataset(partial, phantoms, tmp_path / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FedsegError, match="not empty"):
        sample_dataset(gf, phantoms, tmp_path / "full")
    with pytest.raises(FedsegError, match="--labels-only"):
        find_label_cases(tmp_path / "full")


def test_sample_refuses_a_site_s_cases_whose_labels_are_patients(
    tiny_sites: dict[str, Path], tmp_path: Path
) -> None:
    _, gf = tiny_generator(tmp_path / "g.pt")
    with pytest.raises(FedsegError, match="patient's; sample from phantoms"):
        sample_dataset(gf, tiny_sites["site1"], tmp_path / "set")
    assert not (tmp_path / "set").exists()


def test_choose_cases_is_seeded_and_in_id_order(phantoms: Path) -> None:
    cases = find_label_cases(phantoms)
    a, b = choose_cases(cases, 2, 1), choose_cases(cases, 2, 1)
    assert a == b and [c.case_id for c in a] == sorted(c.case_id for c in a)
    assert choose_cases(cases, None, 0) == cases
