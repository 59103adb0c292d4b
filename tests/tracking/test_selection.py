from __future__ import annotations

import json

import pytest

from fedseg.errors import FedsegError
from fedseg.model.model_file import load_model
from fedseg.model.summary import Summary
from fedseg.tracking.curves import federation_curve
from fedseg.tracking.selection import choose, export_selection, load_selection
from fedseg.tracking.store import RunStore


def _peaked(peak: int, length: int = 9, top: float = 0.8) -> list[float]:
    return [top - 0.05 * abs(i - peak) for i in range(length)]


def test_triplet_picks_best_round_per_region_and_singlet_best_mean(make_run) -> None:
    regions = {"ET": _peaked(3), "TC": _peaked(5), "WT": _peaked(7)}
    run = make_run(
        {s: [0.5] * 9 for s in ("a", "b")},
        region_dice={"a": regions, "b": {g: [v - 0.1 for v in c] for g, c in regions.items()}},
    )
    with RunStore(run) as store:
        trip = choose(store, "triplet", require_checkpoint=False)
        single = choose(store, "singlet", require_checkpoint=False)
    assert {g: r for g, (r, _) in trip.items()} == {"ET": 3, "TC": 5, "WT": 7}
    assert trip["ET"][1] == pytest.approx(0.75)  # (0.8 + 0.7) / 2 with equal case counts
    # Mean over regions of the peaked curves is highest in the middle (round 5).
    assert {r for r, _ in single.values()} == {5}


def test_scores_are_weighted_by_validation_cases(make_run) -> None:
    # Site a (90 cases) peaks at round 2, site b (10 cases) peaks at round 6.
    run = make_run({"a": _peaked(2), "b": _peaked(6)}, n_val={"a": 90, "b": 10})
    with RunStore(run) as store:
        (r, score), *_ = choose(store, "singlet", require_checkpoint=False).values()
    assert r == 2
    assert score == pytest.approx(0.9 * 0.8 + 0.1 * 0.6)


def test_rounds_missing_a_site_or_a_checkpoint_are_not_candidates(make_run, tmp_path) -> None:
    run = make_run({"a": _peaked(4), "b": _peaked(4)})
    with RunStore(run) as store:
        # Model 9, validated by site a only, would win if it counted.
        store.record_validation(9, "a", {"mean": {"dice": Summary(0.99, 0.01, 10)}})
        for mr in range(9):
            store.record_checkpoint(mr, tmp_path / f"m{mr}.pt")
        assert federation_curve({"a": {9: Summary(0.99, 0, 1)}, "b": {8: Summary(0.5, 0, 1)}}) == {}
        assert choose(store, "singlet")["ET"][0] == 4
        store._db.execute("DELETE FROM checkpoints WHERE model_round = 4")
        assert choose(store, "singlet")["ET"][0] in (3, 5)


def test_export_writes_model_files_and_selection_json(make_run, tmp_path) -> None:
    regions = {"ET": _peaked(1, 5), "TC": _peaked(3, 5), "WT": _peaked(3, 5)}
    run = make_run(
        {"a": [0.5] * 5, "b": [0.5] * 5}, region_dice={"a": regions, "b": regions}, checkpoints=True
    )
    out = tmp_path / "triplet"
    with RunStore(run) as store:
        sel = export_selection(run, store, "triplet", out)
    data = json.loads((out / "selection.json").read_text())
    assert data["format"] == "fedseg-selection" and data["kind"] == "triplet"
    assert data["regions"]["ET"]["file"] == "model_ET_round0001.pt"
    assert (
        data["regions"]["TC"]["file"] == data["regions"]["WT"]["file"] == "model_TC-WT_round0003.pt"
    )
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(sel.files)
    loaded = load_selection(out)
    assert loaded.region_files["TC"] == (out / "model_TC-WT_round0003.pt").resolve()
    model = load_model(loaded.region_files["ET"])
    assert model.meta["model_round"] == 1  # from the checkpoint
    assert model.meta["selection"]["regions"] == ["ET"]

    with RunStore(run) as store:
        single = export_selection(run, store, "singlet", tmp_path / "singlet")
    assert single.files == ["model_round0003.pt"]
    assert {c.file for c in single.regions.values()} == {"model_round0003.pt"}


def test_selection_errors_are_one_line(make_run, tmp_path) -> None:
    run = make_run({"a": _peaked(2, 4)})  # no checkpoints recorded
    with RunStore(run) as store, pytest.raises(FedsegError, match="checkpoint"):
        choose(store, "singlet")
    with RunStore(tmp_path / "empty") as store, pytest.raises(FedsegError, match="no validation"):
        choose(store, "triplet")
    with pytest.raises(FedsegError, match="selection file not found"):
        load_selection(tmp_path)
    (tmp_path / "selection.json").write_text('{"format": "other"}')
    with pytest.raises(FedsegError, match="not a fedseg selection"):
        load_selection(tmp_path)
