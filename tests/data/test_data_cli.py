"""`fedseg data check` and `fedseg data split` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedseg.cli import main as cli_main
from fedseg.data.labels import Layout
from fedseg.data.splits import SPLIT_FILE
from tests.helpers import run_fedseg


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    if not any(g.name == "data" for g in cli_main.app.registered_groups):
        cli_main._register()
    return CliRunner()


def _site(root: Path, factory, n: int = 3, layout: Layout = Layout.BRATS2021) -> Path:
    for i in range(n):
        image, label = factory.volumes(seed=i)
        factory.write(root, layout, f"case{i:03d}", image, label)
    return root


def test_check_clean_site_exits_0(tmp_path: Path, factory, runner: CliRunner) -> None:
    root = _site(tmp_path, factory)
    result = runner.invoke(cli_main.app, ["data", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert "3 ok" in result.output and "0 with errors" in result.output


def test_check_errors_exit_1_and_json(tmp_path: Path, factory, runner: CliRunner) -> None:
    root = _site(tmp_path, factory)
    (root / "case001" / "case001_t2.nii.gz").unlink()
    factory.save_raw(root / "case002" / "case002_seg.nii.gz", np.zeros(factory.shape, np.uint8))
    result = runner.invoke(cli_main.app, ["data", "check", str(root)])
    assert result.exit_code == 1
    assert "missing-image" in result.output and "empty-tumor" in result.output
    assert "1 with errors" in result.output and "1 with warnings" in result.output

    result = runner.invoke(cli_main.app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["layout"] == "brats2021"
    assert (report["ok"], report["with_warnings"], report["with_errors"]) == (1, 1, 1)
    by_case = {c["case_id"]: c["problems"] for c in report["cases"]}
    assert by_case["case000"] == []
    assert by_case["case001"][0]["code"] == "missing-image"
    assert by_case["case001"][0]["severity"] == "error"
    assert by_case["case002"][0] == {
        "case_id": "case002",
        "severity": "warning",
        "code": "empty-tumor",
        "message": "label has no tumor voxel (all zero)",
    }


def test_warnings_only_exit_0(tmp_path: Path, factory, runner: CliRunner) -> None:
    root = _site(tmp_path, factory, n=1, layout=Layout.MSD)
    factory.save_raw(root / "labelsTr" / "case000.nii.gz", np.zeros(factory.shape, np.uint8))
    result = runner.invoke(cli_main.app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["with_warnings"] == 1


def test_split_cli_reports_changes(tmp_path: Path, factory, runner: CliRunner) -> None:
    root = _site(tmp_path, factory, n=5)
    result = runner.invoke(cli_main.app, ["data", "split", str(root), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "created; 4 train, 1 validation" in result.output
    first = json.loads((root / SPLIT_FILE).read_text())["cases"]

    result = runner.invoke(cli_main.app, ["data", "split", str(root)])
    assert "unchanged" in result.output

    import shutil

    shutil.rmtree(root / "case004")
    _site(tmp_path / "more", factory, n=7)
    shutil.move(tmp_path / "more" / "case006", root / "case006")
    result = runner.invoke(cli_main.app, ["data", "split", str(root)])
    assert result.exit_code == 0
    assert "updated" in result.output and "case004" in result.output
    assert "case006" in result.output
    now = json.loads((root / SPLIT_FILE).read_text())
    assert all(now["cases"].get(c, now["gone"].get(c)) == s for c, s in first.items())


def test_bad_input_is_one_line_exit_2(tmp_path: Path, factory) -> None:
    proc = run_fedseg("data", "check", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "not a folder" in proc.stderr and "Traceback" not in proc.stderr

    root = _site(tmp_path / "site", factory, n=2)
    assert run_fedseg("data", "split", str(root), "--seed", "3").returncode == 0
    proc = run_fedseg("data", "split", str(root), "--seed", "4")
    assert proc.returncode == 2 and "seed 3, not 4" in proc.stderr
    proc = run_fedseg("data", "check", str(root), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] == 2


def test_layout_option(tmp_path: Path, factory, runner: CliRunner) -> None:
    from fedseg.errors import FedsegError

    root = _site(tmp_path, factory, n=2, layout=Layout.BRATS2023)
    result = runner.invoke(cli_main.app, ["data", "check", str(root), "--layout", "brats2023"])
    assert result.exit_code == 0
    result = runner.invoke(cli_main.app, ["data", "check", str(root), "--layout", "msd"])
    assert isinstance(result.exception, FedsegError) and "no msd cases" in str(result.exception)
    result = runner.invoke(cli_main.app, ["data", "check", str(root), "--layout", "brats2020"])
    assert isinstance(result.exception, FedsegError) and "unknown layout" in str(result.exception)


def test_error_messages_keep_square_brackets() -> None:
    # A FedsegError text is printed verbatim, not read as rich markup.
    code = (
        "import sys; sys.argv = ['fedseg', 'data', 'check', '/nonexistent[openvino]'];"
        "from fedseg.cli.main import main; main()"
    )
    src = str(Path(__file__).parents[2] / "src")
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src}
    )
    assert res.returncode == 2 and "/nonexistent[openvino]" in res.stderr
