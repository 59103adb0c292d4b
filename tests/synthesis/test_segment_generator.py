"""`fedseg segment --generator`: a case lacking FLAIR is segmented in two passes (FLAIR zero,
FLAIR completed from that label map, segmented again; outside the paper); without a
generator the case is refused as before."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data.cases import discover_cases
from fedseg.errors import FedsegError
from fedseg.model.segmenter import Member, ModelSet, resolve_case
from fedseg.synth.two_pass import segment_completing
from tests.helpers import run_fedseg
from tests.model.modelkit import tiny_model
from tests.synthesis.servekit import site_without, tiny_generator


@pytest.fixture
def flairless_case(tiny_sites: dict[str, Path], tmp_path: Path) -> Path:
    site = site_without(tiny_sites["site3"], tmp_path / "site3", "flair", declare=False)
    return discover_cases(site)[0].folder  # type: ignore[return-value]


def test_two_passes_see_a_zero_then_a_completed_flair(flairless_case: Path, tmp_path: Path) -> None:
    _, gf = tiny_generator(tmp_path / "g.pt")
    flair_max: list[float] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        flair_max.append(float(np.abs(batch[:, 3]).max()))
        wt = (batch[:, 2:3] > 1.0).astype(np.float32)  # bright T2 as WT, TC/ET empty
        return np.concatenate([np.zeros_like(wt), np.zeros_like(wt), wt], axis=1)

    models = ModelSet((Member(predict, (32, 32, 32), "t2-threshold"),))
    case = resolve_case([flairless_case], allow_lacking=True)
    result = segment_completing(case, models, gf, overlap=0.0)
    assert result.completed == ("flair",)
    n = len(flair_max) // 2
    assert len(flair_max) == 2 * n and n > 0
    assert max(flair_max[:n]) == 0.0  # first pass: FLAIR channel zero
    assert max(flair_max[n:]) > 0.0  # second pass: FLAIR drawn by the generator
    assert result.segmentation.labels.shape == nib.load(case.images["t1"].path).shape


def test_segment_cli_with_and_without_generator(flairless_case: Path, tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.pt")
    gen, _ = tiny_generator(tmp_path / "g.pt")
    out = tmp_path / "seg.nii.gz"
    proc = run_fedseg("segment", "-m", model, flairless_case, "-o", out)
    assert proc.returncode == 2 and "missing modalities flair" in proc.stderr
    assert "--generator" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
    proc = run_fedseg("segment", "-m", model, "--generator", gen, flairless_case, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "flair completed by generator" in proc.stderr and "outside" in proc.stderr
    t1 = next(flairless_case.glob("*_t1.nii.gz"))
    seg = nib.load(out)
    assert seg.shape == nib.load(t1).shape
    np.testing.assert_allclose(seg.affine, nib.load(t1).affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
    assert not list(flairless_case.glob("*.syn.nii.gz"))  # completions stay in memory


def test_segment_generator_refuses_an_untrained_modality(
    flairless_case: Path, tmp_path: Path
) -> None:
    _, gf = tiny_generator(tmp_path / "g.pt", trained=["t1", "t1ce", "t2"])
    models = ModelSet((Member(lambda b: np.zeros((b.shape[0], 3, *b.shape[2:]), np.float32),
                              (32, 32, 32)),))  # fmt: skip
    case = resolve_case([flairless_case], allow_lacking=True)
    with pytest.raises(FedsegError, match="flair bank was never trained"):
        segment_completing(case, models, gf)
