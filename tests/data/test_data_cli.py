"""`fedseg data check` and `fedseg data split` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
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


def test_synth_missing_holds_back_and_declares(tmp_path: Path, runner: CliRunner) -> None:
    import yaml

    from fedseg.data.cases import discover_cases
    from fedseg.data.synth import read_record

    out = tmp_path / "ds"
    args = ["data", "synth", str(out), "--sites", "2", "--cases-per-site", "2", "--spacing", "8"]
    result = runner.invoke(
        cli_main.app, [*args, "--missing", "site2:FLAIR", "--missing", "site2:t1"]
    )
    assert result.exit_code == 0, result.output
    assert "site2: 2 cases" in result.output and "(lacks t1, flair)" in result.output
    site2 = out / "site2"
    assert yaml.safe_load((site2 / "fedseg_site.yaml").read_text()) == {
        "absent_modalities": ["t1", "flair"]
    }
    assert not (out / "site1" / "fedseg_site.yaml").exists()
    for c in ("site2_000", "site2_001"):
        names = sorted(p.name for p in (site2 / c).iterdir())
        assert names == [f"{c}_seg.nii.gz", f"{c}_t1ce.nii.gz", f"{c}_t2.nii.gz"]
        held = sorted(p.name for p in (out / "heldback" / "site2" / c).iterdir())
        assert held == [f"{c}_flair.nii.gz", f"{c}_t1.nii.gz"]
    assert not (out / "heldback" / "site1").exists()
    assert read_record(out).missing == {"site2": ["t1", "flair"]}
    # the held-back image is the one a full site of the same seed writes
    full = tmp_path / "full"
    assert runner.invoke(cli_main.app, ["data", "synth", str(full), *args[3:]]).exit_code == 0
    np.testing.assert_array_equal(
        nib.load(out / "heldback/site2/site2_001/site2_001_flair.nii.gz").get_fdata(),
        nib.load(full / "site2/site2_001/site2_001_flair.nii.gz").get_fdata(),
    )
    # the site passes `data check`, with one note, and splits
    result = runner.invoke(cli_main.app, ["data", "check", str(site2)])
    assert result.exit_code == 0, result.output
    assert "2 ok" in result.output and result.output.count("declared absent") == 2
    assert "info t1 declared absent for this site (fedseg_site.yaml)" in result.output
    assert runner.invoke(cli_main.app, ["data", "split", str(site2)]).exit_code == 0
    assert all(c.absent == ("t1", "flair") for c in discover_cases(site2))


def test_synth_labels_only(tmp_path: Path, runner: CliRunner) -> None:
    from fedseg.data.cases import label_only_cases
    from fedseg.errors import FedsegError

    out = tmp_path / "phantoms"
    result = runner.invoke(
        cli_main.app,
        ["data", "synth", str(out), "--sites", "1", "--cases-per-site", "2", "--spacing", "8",
         "--labels-only"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "site1: 2 label-only cases" in result.output
    assert sorted(p.name for p in (out / "site1" / "site1_000").iterdir()) == [
        "site1_000_brain.nii.gz",
        "site1_000_seg.nii.gz",
    ]
    found = label_only_cases(out / "site1")
    assert [c.case_id for c in found] == ["site1_000", "site1_001"]
    brain = nib.load(found[0].brain).get_fdata()
    label = nib.load(found[0].label).get_fdata()
    assert set(np.unique(brain)) == {0, 1} and (label[brain == 0] == 0).all() and label.any()
    result = runner.invoke(cli_main.app, ["data", "check", str(out / "site1")])
    assert isinstance(result.exception, FedsegError)
    assert "fedseg sample --labels" in str(result.exception)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("site2", "--missing site2: give SITE:MODALITY, e.g. site2:flair"),
        ("site2:dwi", "invalid missing: site2: unknown modality 'dwi'"),
        ("site7:flair", "missing names site7; the sites are site1..site2"),
    ],
)
def test_synth_missing_refusals(tmp_path: Path, runner: CliRunner, option, message) -> None:
    from fedseg.errors import FedsegError

    result = runner.invoke(
        cli_main.app, ["data", "synth", str(tmp_path), "--sites", "2", "--missing", option]
    )
    assert isinstance(result.exception, FedsegError)
    assert message in str(result.exception), str(result.exception)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_check_completed_case_and_bad_site_file(tmp_path: Path, factory, runner) -> None:
    from fedseg.data.cases import discover_cases, synthetic_image_path, write_synthetic_image

    root = _site(tmp_path / "site", factory, n=2)
    for c in ("case000", "case001"):
        (root / c / f"{c}_flair.nii.gz").unlink()
    (root / "fedseg_site.yaml").write_text("absent_modalities: [flair]\n")
    case = discover_cases(root)[0]
    image, _ = factory.volumes()
    path = synthetic_image_path(case, "flair")
    write_synthetic_image(path, image[3], factory.affine, "flair", "0123456789abcdef99")
    result = runner.invoke(cli_main.app, ["data", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert "flair synthetic, generator 0123456789abcdef" in result.output
    assert "1 of 2 cases completed by generator 0123456789abcdef" in result.output
    # a broken site file: one line, exit 2, for every data verb
    (root / "fedseg_site.yaml").write_text("absent_modalities: [flare]\n")
    for verb in ("check", "split"):
        proc = run_fedseg("data", verb, str(root))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
        assert "fedseg_site.yaml: absent_modalities: unknown modality 'flare'" in proc.stderr
