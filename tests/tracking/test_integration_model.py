"""The coordinator's outputs read by the model developer's code, and the other way round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.data.labels import REGIONS
from fedseg.model.evaluate import COLUMNS, CaseResult, write_metrics_csv
from fedseg.model.segmenter import ModelSet
from fedseg.tracking.paired_test import compare_models
from fedseg.tracking.selection import export_selection, selection_model_files
from fedseg.tracking.store import RunStore


def test_triplet_selection_loads_as_a_segmenter_triplet(make_run, tmp_path: Path) -> None:
    peaks = {"ET": 1, "TC": 2, "WT": 3}
    curves = {g: [0.8 - 0.1 * abs(i - p) for i in range(5)] for g, p in peaks.items()}
    run = make_run(
        {"a": [0.5] * 5, "b": [0.5] * 5}, region_dice={"a": curves, "b": curves}, checkpoints=True
    )
    with RunStore(run) as store:
        export_selection(run, store, "triplet", tmp_path / "sel")
    files, kind = selection_model_files(tmp_path / "sel")
    assert kind == "triplet" and [f.name for f in files] == [
        "model_ET_round0001.pt",
        "model_TC_round0002.pt",
        "model_WT_round0003.pt",
    ]
    models = ModelSet.from_files(files, "triplet")
    image = np.random.default_rng(0).normal(size=(4, 16, 16, 16)).astype(np.float32)
    probs = models.predict(image).full()
    assert probs.shape == (len(REGIONS), 16, 16, 16) and np.all((probs >= 0) & (probs <= 1))


def test_compare_reads_the_evaluate_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def results(shift: float) -> list[CaseResult]:
        return [
            CaseResult.from_columns(
                f"case{i}",
                {c: float(np.clip(0.5 + shift + rng.normal(0, 0.05), 0, 1)) for c in COLUMNS},
            )
            for i in range(12)
        ]

    a = write_metrics_csv(results(0.0), tmp_path / "initial.csv")
    b = write_metrics_csv(results(0.2), tmp_path / "final.csv")
    rows = compare_models(a, b, metrics=("dice", "sensitivity"))
    assert {(r.region, r.metric) for r in rows} == {
        (g, m) for g in (*REGIONS, "mean") for m in ("dice", "sensitivity")
    }
    assert all(r.n == 12 and r.better == "B" for r in rows)
    assert next(r for r in rows if r.region == "ET").p == pytest.approx(2 / 2**12)


def test_segment_cli_takes_a_selection_folder_as_a_triplet(make_run, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedseg.cli.main import _register, app
    from fedseg.data.cases import write_case
    from fedseg.data.nifti import load_array

    peaks = {"ET": 1, "TC": 2, "WT": 3}
    curves = {g: [0.8 - 0.1 * abs(i - p) for i in range(5)] for g, p in peaks.items()}
    run = make_run(
        {"a": [0.5] * 5, "b": [0.5] * 5}, region_dice={"a": curves, "b": curves}, checkpoints=True
    )
    with RunStore(run) as store:
        export_selection(run, store, "triplet", tmp_path / "sel")
    rng = np.random.default_rng(1)
    image = np.zeros((4, 20, 20, 20), np.float32)
    image[:, 2:18, 2:18, 2:18] = rng.normal(1, 0.3, size=(4, 16, 16, 16))
    case = write_case(tmp_path / "cases", "c1", image, None, np.diag([2.0, 2.0, 2.0, 1.0]))
    _register()
    out = tmp_path / "seg.nii.gz"
    res = CliRunner().invoke(
        app, ["segment", "-m", str(tmp_path / "sel"), str(case), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    # the same label map as the three selected models used as a triplet through the API
    files, _ = selection_model_files(tmp_path / "sel")
    expected = ModelSet.from_files(files, "triplet").predict(image)

    np.testing.assert_array_equal(load_array(out, dtype=np.uint8), expected.labels())
