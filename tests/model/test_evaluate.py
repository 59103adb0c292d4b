"""Per-case evaluation: metrics through case_metrics, the CSV, the printed means."""

from __future__ import annotations

import csv
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
    read_metrics_csv,
    select_cases,
    summarize_cases,
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
    path = write_metrics_csv(
        [*results, CaseResult.from_columns("empty", empty)], tmp_path / "m.csv"
    )
    back = read_metrics_csv(path)
    assert [r.case_id for r in back] == [*seen, "empty"]
    assert back[-1].values == empty
    assert summarize_cases(back)["WT"]["dice"].mean == pytest.approx(3 / 4)


def test_unlabelled_cases_are_refused(site_dir: Path, oracle: Member) -> None:
    next(site_dir.glob("case001/*_seg.nii.gz")).unlink()
    with pytest.raises(FedsegError, match=r"1 case\(s\) have no label file \(e\.g\. case001\)"):
        evaluate_cases(discover_cases(site_dir), ModelSet((oracle,)))


def test_split_selection(site_dir: Path) -> None:
    everything = {c.case_id for c in select_cases(site_dir, "all")}
    assert everything == {"case000", "case001", "case002"}
    # the persistent split: train and val partition the labelled cases
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


def _result(case_id: str, dice: tuple[float, float, float], hd: float = 1.0) -> CaseResult:
    return CaseResult(
        case_id, {g: {"dice": d, "hd95": hd} for g, d in zip(REGIONS, dice, strict=True)}
    )


@pytest.mark.parametrize(
    ("dices", "region", "metric", "mean", "std", "n"),
    [
        ([(1.0, 0.5, 0.0), (0.0, 0.5, 1.0)], "ET", "dice", 0.5, 0.5, 2),  # population std
        ([(1.0, 0.5, 0.0), (0.0, 0.5, 1.0)], "TC", "dice", 0.5, 0.0, 2),
        ([(0.9, 0.6, 0.3), (0.3, 0.3, 0.3)], "mean", "dice", 0.45, 0.15, 2),  # per-case mean
        ([(0.2, 0.4, 0.6)], "WT", "hd95", 1.0, 0.0, 1),
        ([(float("nan"), 0.4, 0.6), (0.2, 0.4, 0.6)], "ET", "dice", 0.2, 0.0, 1),  # NaN: out
    ],
)  # fmt: skip
def test_summaries_a_site_sends(
    dices: list[tuple[float, float, float]], region: str, metric: str, mean: float, std: float,
    n: int,
) -> None:  # fmt: skip
    s = summarize_cases([_result(f"c{i}", d) for i, d in enumerate(dices)])[region][metric]
    assert (s.mean, s.std, s.n) == (pytest.approx(mean), pytest.approx(std), n)


def test_summaries_of_nothing_and_of_a_metric_subset() -> None:
    assert summarize_cases([]) == {}
    only_hd = [CaseResult("c", {g: {"hd95": 2.0} for g in REGIONS})]
    assert set(summarize_cases(only_hd)) == set(REGIONS)  # no Dice: no region "mean"


def test_loaded_volumes_and_a_metric_subset_give_the_same_dice(
    site_dir: Path, oracle: Member
) -> None:
    from fedseg.data.cases import load_case

    cases = discover_cases(site_dir)
    models = ModelSet((Member(_nothing, TINY_ROI),))
    full = evaluate_cases(cases, models)
    loaded = evaluate_cases([load_case(c) for c in cases], models, metrics=("dice",))
    assert [r.case_id for r in loaded] == [r.case_id for r in full]
    for a, b in zip(full, loaded, strict=True):
        assert b.metrics == {g: {"dice": a.metrics[g]["dice"]} for g in REGIONS}
        assert a.mean_dice == b.mean_dice
    with pytest.raises(FedsegError, match="unknown metric 'iou'"):
        evaluate_cases(cases[:1], models, metrics=("iou",))
