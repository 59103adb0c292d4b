"""The CLI: export then segment with the exported model without torch; missing extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data.cases import discover_cases
from fedseg.model.metrics import case_metrics, mean_dice
from fedseg.model.segmenter import ModelSet, segment_case
from tests.helpers import SRC, run_fedseg

NO_TORCH = """
import sys
from fedseg.cli.main import _register, app
_register()
try:
    app(sys.argv[1:])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
loaded = [m for m in ("torch", "monai", "nncf") if m in sys.modules]
assert not loaded, loaded
print("no torch")
"""


def test_segment_with_export_imports_no_torch(
    fp32_export: Path, trained: Path, site: Path, tmp_path: Path
) -> None:
    case = discover_cases(site)[0].folder
    out = tmp_path / "seg.nii.gz"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "segment", str(case), "-m", str(fp32_export),
         "-o", str(out)],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin"},
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no torch" in proc.stdout
    ref = segment_case(discover_cases(site)[0], ModelSet.from_files([trained])).labels
    got = np.asarray(nib.load(out).dataobj)
    assert got.shape == ref.shape and (ref > 0).sum() > 50
    assert mean_dice(case_metrics(got, ref, (1, 1, 1), ("dice",))) > 0.99


@pytest.mark.slow
def test_cli_export_int8_then_segment(trained: Path, site: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    proc = run_fedseg("export", trained, "--format", "openvino", "--int8",
                      "--calibration", site, "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "INT8" in proc.stderr and "mean Dice on 1 calibration cases" in proc.stderr
    seg = tmp_path / "seg.nii.gz"
    case = discover_cases(site)[1].folder
    assert run_fedseg("segment", case, "-m", out / "model.xml", "-o", seg).returncode == 0
    assert set(np.unique(np.asarray(nib.load(seg).dataobj))) <= {0, 1, 2, 4}


def test_export_without_openvino_names_the_extra(trained: Path, tmp_path: Path) -> None:
    # A None entry in sys.modules makes `import openvino` fail as if it were not installed.
    script = (
        "import sys; sys.modules['openvino'] = None; sys.modules['nncf'] = None\n"
        "from fedseg.cli.main import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "export", str(trained), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin"},
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'fedseg[openvino]'" in lines[0], proc.stderr


@pytest.mark.slow
def test_bad_format_is_one_line(trained: Path, tmp_path: Path) -> None:
    proc = run_fedseg("export", trained, "--format", "onnx", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "only 'openvino'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_activation_scheme_is_one_line(trained: Path, tmp_path: Path) -> None:
    proc = run_fedseg("export", trained, "--activations", "mixed", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "use symmetric or asymmetric" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
