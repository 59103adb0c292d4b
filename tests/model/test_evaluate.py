"""Per-case evaluation: metrics through case_metrics, the CSV, the printed means."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import discover_cases
from fedseg.data.labels import REGIONS
from fedseg.errors import FedsegError
from fedseg.model.evaluate import (
    COLUMNS,
    CaseResult,
    evaluate_cases,
    mean_metrics,
    read_metrics_csv,
    select_cases,
    write_metrics_csv,
)
from fedseg.model.metrics import HD95_ONE_EMPTY, METRICS
from fedseg.model.segmenter import Member, ModelSet
from tests.helpers import run_fedseg
from tests.model.modelkit import TINY_ROI


def _nothing(batch: np.ndarray) -> np.ndarray:
    return np.zeros((batch.shape[0], 3, *batch.shape[2:]), np.float32)


def test_columns() -> None:
    assert COLUMNS[:2] == ("ET_dice", "ET_jaccard") and COLUMNS[-1] == "WT_specificity"
    assert len(COLUMNS) == len(REGIONS) * len(METRICS) == 15


def test_oracle_scores_perfectly_and_empty_prediction_scores_by_the_rules(
    site_dir: Path, oracle: Member, tmp_path: Path
) -> None:
    cases = discover_cases(site_dir)
    seen: list[str] = []
    results = evaluate_cases(cases, ModelSet((oracle,)), on_case=lambda r: seen.append(r.case_id))
    assert seen == ["case000", "case001", "case002"]
    for r in results:
        for reg in REGIONS:
            assert r.values[f"{reg}_dice"] == 1.0 and r.values[f"{reg}_hd95"] == 0.0
            assert r.values[f"{reg}_sensitivity"] == 1.0
    empty = evaluate_cases(cases[:1], ModelSet((Member(_nothing, TINY_ROI),)))[0].values
    assert empty["WT_dice"] == 0.0 and empty["TC_hd95"] == HD95_ONE_EMPTY
    assert empty["ET_sensitivity"] == 0.0 and empty["ET_specificity"] == 1.0
    path = write_metrics_csv([*results, CaseResult("empty", empty)], tmp_path / "m.csv")
    back = read_metrics_csv(path)
    assert [r.case_id for r in back] == [*seen, "empty"]
    assert back[-1].values == empty
    assert mean_metrics(back)["WT_dice"] == pytest.approx(3 / 4)


def test_unlabelled_cases_are_refused(site_dir: Path, oracle: Member) -> None:
    next(site_dir.glob("case001/*_seg.nii.gz")).unlink()
    with pytest.raises(FedsegError, match=r"1 case\(s\) have no label file \(e\.g\. case001\)"):
        evaluate_cases(discover_cases(site_dir), ModelSet((oracle,)))


def test_split_selection(site_dir: Path) -> None:
    everything = {c.case_id for c in select_cases(site_dir, "all")}
    assert everything == {"case000", "case001", "case002"}
    if importlib.util.find_spec("fedseg.data.splits") is None:
        with pytest.raises(FedsegError, match="use --split all"):
            select_cases(site_dir, "val")
    else:  # once the persistent splits exist: train and val partition the labelled cases
        train = {c.case_id for c in select_cases(site_dir, "train")}
        val = {c.case_id for c in select_cases(site_dir, "val")}
        assert train | val == everything and not train & val and val
    with pytest.raises(FedsegError, match="use train, val or all"):
        select_cases(site_dir, "test")


@pytest.mark.slow
def test_cli_writes_csv_and_prints_its_means(
    site_dir: Path, model_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "metrics.csv"
    proc = run_fedseg("evaluate", "--model", model_file, "--data", site_dir, "--split", "all",
                      "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with out.open() as f:
        rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["case_id", *COLUMNS]
    assert [r["case_id"] for r in rows] == ["case000", "case001", "case002"]
    printed = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if cells and cells[0] in REGIONS:
            printed[cells[0]] = cells[1:]
    assert set(printed) == set(REGIONS), proc.stdout
    for reg in REGIONS:
        for metric, shown in zip(METRICS, printed[reg], strict=True):
            mean = np.mean([float(r[f"{reg}_{metric}"]) for r in rows])
            assert shown == f"{mean:.4f}"
