"""``fedseg segment``/``evaluate`` with --device/--precision: a missing GPU is a one-line
error, bf16 runs end to end, exported (OpenVINO) models refuse a CUDA device."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fedseg.errors import FedsegError
from fedseg.model.compute import ComputeConfig
from fedseg.model.segmenter import ModelSet, resolve_case, segment_case
from tests.helpers import run_fedseg

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")


def test_exported_model_refuses_a_cuda_device(tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    exported.mkdir()
    with pytest.raises(FedsegError, match=r"runs on the CPU only; drop --device cuda:1") as e:
        ModelSet.from_files([exported], compute=ComputeConfig(device="cuda:1"))
    assert "\n" not in str(e.value)


def test_model_set_runs_in_bf16(case_dir: Path, model_file: Path) -> None:
    case = resolve_case([case_dir])
    ref = segment_case(case, ModelSet.from_files([model_file], compute=ComputeConfig()))
    bf16 = ModelSet.from_files([model_file], compute=ComputeConfig(precision="bf16"))
    probs = segment_case(case, bf16).probabilities
    assert probs.dtype == np.float32
    assert float(np.abs(probs - ref.probabilities).max()) < 0.05


@cpu_only
@pytest.mark.slow
def test_cli_device_and_precision(case_dir: Path, model_file: Path, tmp_path: Path) -> None:
    site_dir = case_dir.parent  # one labelled case
    out = tmp_path / "seg.nii.gz"
    for cmd in (
        ("segment", "--model", model_file, case_dir, "--out", out, "--device", "cuda:0"),
        ("evaluate", "-m", model_file, "-d", site_dir, "--split", "all",
         "-o", tmp_path / "m.csv", "--device", "cuda"),
    ):  # fmt: skip
        proc = run_fedseg(*cmd)
        assert proc.returncode == 2, proc.stderr
        assert "0 CUDA device(s); use --device cpu or --device auto" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()
    proc = run_fedseg("segment", "--model", model_file, case_dir, "--out", out,
                      "--precision", "bf16", "--channels-last")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    labels = np.asarray(nib.load(out).dataobj)
    assert labels.shape == (26, 30, 22) and set(np.unique(labels)) <= {0, 1, 2, 4}
    csv = tmp_path / "m.csv"
    proc = run_fedseg("evaluate", "-m", model_file, "-d", site_dir, "--split", "all",
                      "-o", csv, "--precision", "bf16", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(csv.read_text().strip().splitlines()) == 2  # header + 1 case
    proc = run_fedseg("segment", "--model", model_file, case_dir, "--out", out,
                      "--precision", "fp8")  # fmt: skip
    assert proc.returncode == 2 and "--precision" in proc.stderr
