from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from fedseg.errors import FedsegError
from fedseg.tracking.paired_test import compare_models, read_case_table, read_case_tables

REGS = ("ET", "TC", "WT")


def write_long(path: Path, dice: dict[str, np.ndarray], model: str | None = None) -> Path:
    """Long per-case CSV: one row per (case, region, metric)."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(
                ["site", "case_id", "region", "metric", "value", *(["model"] if model else [])]
            )
        for g, vals in dice.items():
            for i, v in enumerate(vals):
                for metric, value in (("dice", v), ("hd95", 40 * (1 - v))):
                    w.writerow(
                        ["s1", f"c{i:02d}", g, metric, f"{value:.6f}", *([model] if model else [])]
                    )
    return path


def write_wide(path: Path, dice: dict[str, np.ndarray]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "case_id", *(f"{g}_dice" for g in dice)])
        for i in range(len(next(iter(dice.values())))):
            w.writerow(["s1", f"c{i:02d}", *(f"{dice[g][i]:.6f}" for g in dice)])
    return path


@pytest.fixture
def two_models() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    a = {g: np.clip(rng.normal(0.5, 0.1, 20), 0, 1) for g in REGS}
    b = {g: np.clip(a[g] + rng.normal(0.1, 0.05, 20), 0, 1) for g in REGS}
    return a, b


def test_wilcoxon_matches_scipy_and_direction(tmp_path: Path, two_models) -> None:
    a, b = two_models
    rows = compare_models(write_long(tmp_path / "a.csv", a), write_long(tmp_path / "b.csv", b))
    et = next(r for r in rows if r.region == "ET" and r.metric == "dice")
    ref = stats.wilcoxon(np.round(b["ET"], 6) - np.round(a["ET"], 6))
    assert et.n == 20 and et.p == pytest.approx(ref.pvalue) and et.better == "B"
    assert et.mean_diff == pytest.approx(float(np.mean(b["ET"] - a["ET"])), abs=1e-5)
    # Lower HD95 is better: B improves there too.
    assert next(r for r in rows if r.region == "WT" and r.metric == "hd95").better == "B"
    mean = next(r for r in rows if r.region == "mean" and r.metric == "dice")
    assert mean.mean_a == pytest.approx(np.mean([a[g] for g in REGS]), abs=1e-5)


def test_wide_and_long_layouts_read_the_same(tmp_path: Path, two_models) -> None:
    a, _ = two_models
    long = read_case_table(write_long(tmp_path / "l.csv", a))
    wide = read_case_table(write_wide(tmp_path / "w.csv", a))
    for key, case in wide.items():
        for g in REGS:
            assert case[g]["dice"] == pytest.approx(long[key][g]["dice"])


def test_one_csv_with_two_models(tmp_path: Path, two_models) -> None:
    a, b = two_models
    path = write_long(tmp_path / "both.csv", a, model="round0")
    write_long(path, b, model="round9")
    assert sorted(read_case_tables(path)) == ["round0", "round9"]
    rows = compare_models(path)
    assert all(r.better == "B" for r in rows if r.metric == "dice")
    with pytest.raises(FedsegError, match="holds models"):
        read_case_table(path)


def test_identical_models_are_not_different(tmp_path: Path, two_models) -> None:
    a, _ = two_models
    p = write_long(tmp_path / "a.csv", a)
    rows = compare_models(p, p)
    assert all(r.p == 1.0 and r.better == "-" for r in rows)


def test_bad_inputs_raise_one_line_errors(tmp_path: Path, two_models) -> None:
    a, _ = two_models
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(FedsegError, match="no case_id column"):
        read_case_tables(tmp_path / "x.csv")
    with pytest.raises(FedsegError, match="not found"):
        read_case_tables(tmp_path / "missing.csv")
    other = {g: v[:5] for g, v in a.items()}
    p1 = write_long(tmp_path / "p1.csv", other)
    p2 = tmp_path / "p2.csv"
    p2.write_text(p1.read_text().replace("c0", "z0"))
    with pytest.raises(FedsegError, match="share no case"):
        compare_models(p1, p2)


def test_compare_models_cli_writes_shareable_json(tmp_path: Path, two_models) -> None:
    from fedseg.cli.main import _register, app

    _register()
    a, b = two_models
    out = tmp_path / "result.json"
    res = CliRunner().invoke(
        app,
        [
            "compare-models",
            str(write_long(tmp_path / "a.csv", a)),
            str(write_long(tmp_path / "b.csv", b)),
            "--metric",
            "dice",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert {r["region"] for r in data["rows"]} == {"ET", "TC", "WT", "mean"}
    assert "c00" not in out.read_text()  # no per-case values leave the site
    assert "Wilcoxon" in res.output
