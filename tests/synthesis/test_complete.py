"""`fedseg complete`: a site lacking FLAIR gets `<id>_flair.syn.nii.gz` beside its real files
(same grid, header-marked), which `fedseg data check` then takes as a full case; refusals
of an untrained modality and of a case without a label map are one line each."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data import nifti
from fedseg.data.cases import discover_cases, synthetic_image_path
from fedseg.data.nifti import read_descrip
from fedseg.errors import FedsegError
from fedseg.synth.complete import complete_case
from tests.helpers import run_fedseg
from tests.synthesis.servekit import site_without, tiny_generator


@pytest.fixture
def flairless(tiny_sites: dict[str, Path], tmp_path: Path) -> Path:
    return site_without(tiny_sites["site1"], tmp_path / "site1", "flair")


def test_complete_writes_marked_flair_on_the_real_grid_and_data_check_passes(
    flairless: Path, tmp_path: Path
) -> None:
    gen, gf = tiny_generator(tmp_path / "g.pt")
    fig = tmp_path / "fig.png"
    proc = run_fedseg("complete", "--generator", gen, flairless, "--figure", fig)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 synthetic image(s) for 4 case(s)" in proc.stderr
    assert fig.is_file() and fig.stat().st_size > 0
    for case in discover_cases(flairless):
        out = case.folder / f"{case.case_id}_flair.syn.nii.gz"
        assert out == synthetic_image_path(case, "flair") and out.is_file()
        real = nib.load(case.images["t1"].path)
        made = nib.load(out)
        assert made.shape == real.shape
        np.testing.assert_allclose(made.affine, real.affine)
        assert read_descrip(out) == f"fedseg synthetic flair gen {gf.weights_hash[:16]}"
        vol = np.asarray(made.dataobj)
        brain = nifti.load_array(case.images["t1"].path) != 0
        assert vol.dtype == np.float32 and vol.min() >= 0 and vol.max() <= 1
        assert not vol[~brain & (nifti.load_array(case.label) == 0)].any()  # zero outside
    # again: refused unless --overwrite
    proc = run_fedseg("complete", "--generator", gen, flairless)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # the test: the completed site is a full one for `fedseg data check`
    check = run_fedseg("data", "check", flairless)
    assert check.returncode == 0, check.stdout + check.stderr
    assert all(c.present == ("t1", "t1ce", "t2", "flair") for c in discover_cases(flairless))
    assert all(c.synthetic == ("flair",) for c in discover_cases(flairless))


def test_complete_refuses_an_untrained_modality(flairless: Path, tmp_path: Path) -> None:
    gen, gf = tiny_generator(tmp_path / "g.pt", trained=["t1", "t1ce", "t2"])
    case = discover_cases(flairless)[0]
    with pytest.raises(FedsegError, match="flair bank was never trained"):
        complete_case(gf, case, ["flair"])
    proc = run_fedseg("complete", "--generator", gen, flairless)
    assert proc.returncode == 2 and "flair bank was never trained" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(flairless.rglob("*.syn.nii.gz"))


def test_complete_refuses_a_case_without_label(flairless: Path, tmp_path: Path) -> None:
    _, gf = tiny_generator(tmp_path / "g.pt")
    case = discover_cases(flairless)[0]
    assert case.label is not None
    case.label.unlink()
    case = discover_cases(flairless)[0]
    with pytest.raises(FedsegError, match=f"case {case.case_id}: no label map"):
        complete_case(gf, case, ["flair"])
    assert not list(flairless.rglob("*.syn.nii.gz"))


def test_complete_leaves_a_real_image_alone(tiny_sites: dict[str, Path], tmp_path: Path) -> None:
    site = site_without(tiny_sites["site1"], tmp_path / "s", "flair", declare=False)
    _, gf = tiny_generator(tmp_path / "g.pt")
    case = discover_cases(site)[0]
    result = complete_case(gf, case, ["t2", "flair"])
    assert list(result.written) == ["flair"] and result.skipped == {"t2": "real image present"}


def test_complete_without_a_declared_absence_asks_for_modality(
    tiny_sites: dict[str, Path], tmp_path: Path
) -> None:
    site = site_without(tiny_sites["site1"], tmp_path / "s", "flair", declare=False)
    gen, _ = tiny_generator(tmp_path / "g.pt")
    proc = run_fedseg("complete", "--generator", gen, site)
    assert proc.returncode == 2 and "give --modality" in proc.stderr
