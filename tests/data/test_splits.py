"""Persistent splits: exact 4:1 first split, and no case ever changes side."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseg.data.labels import Layout
from fedseg.data.splits import (
    SPLIT_FILE,
    Side,
    SplitFile,
    case_score,
    first_split,
    load_split,
    make_split,
    set_validation_cases,
    update_split,
)
from fedseg.errors import FedsegError


@pytest.mark.parametrize(
    ("n", "n_val"), [(1, 0), (2, 1), (3, 1), (5, 1), (10, 2), (12, 2), (13, 3)]
)
def test_first_split_sizes(n: int, n_val: int) -> None:
    ids = [f"c{i}" for i in range(n)]
    sides = first_split(ids, seed=0, val_fraction=0.2)
    assert sorted(sides) == sorted(ids)
    assert sum(s is Side.VAL for s in sides.values()) == n_val


def test_first_split_takes_lowest_scores_and_depends_on_seed() -> None:
    ids = [f"case{i:03d}" for i in range(50)]
    sides = first_split(ids, seed=7, val_fraction=0.2)
    val = {c for c, s in sides.items() if s is Side.VAL}
    cutoff = max(case_score(c, 7) for c in val)
    assert all(case_score(c, 7) > cutoff for c in set(ids) - val)
    assert val != {c for c, s in first_split(ids, 8, 0.2).items() if s is Side.VAL}
    assert 0 <= case_score("x", 0) < 1 and case_score("x", 0) == case_score("x", 0)


def test_new_case_side_depends_only_on_id_and_seed() -> None:
    rec, _ = update_split(None, ["a", "b", "c", "d", "e"], 3, 0.2)
    one, _ = update_split(rec, ["a", "b", "c", "d", "e", "new"], 3, 0.2)
    other, _ = update_split(rec, ["a", "new"], 3, 0.2)
    expected = Side.VAL if case_score("new", 3) < 0.2 else Side.TRAIN
    assert one.cases["new"] is expected and other.cases["new"] is expected


ids_st = st.sets(st.integers(0, 60).map(lambda i: f"case{i:03d}"), max_size=25)


@settings(max_examples=60, deadline=None)
@given(
    start=ids_st,
    steps=st.lists(st.tuples(ids_st, ids_st), min_size=1, max_size=12),
    seed=st.integers(0, 5),
)
def test_no_case_ever_changes_side(
    start: set[str], steps: list[tuple[set[str], set[str]]], seed: int
) -> None:
    record, _ = update_split(None, sorted(start), seed, 0.2)
    ever: dict[str, Side] = dict(record.cases)
    present = set(start)
    for added, removed in steps:
        present = (present | added) - removed
        record, changes = update_split(record, sorted(present), seed, 0.2)
        record = SplitFile.model_validate_json(record.model_dump_json())  # through the file format
        assert set(record.cases) == present
        assert not set(record.gone) & present
        for c, side in {**record.cases, **record.gone}.items():
            assert ever.setdefault(c, side) is side, f"{c} moved"
        assert set(changes.removed) <= removed
    # every case seen is still on record, on disk or as gone
    assert set(ever) == set(record.cases) | set(record.gone)


def _site(root: Path, factory, ids: list[str]) -> Path:
    image, label = factory.volumes()
    for c in ids:
        factory.write(root, Layout.BRATS2021, c, image, label)
    return root


def test_make_split_on_disk(tmp_path: Path, factory) -> None:
    ids = [f"c{i}" for i in range(5)]
    root = _site(tmp_path, factory, ids)
    split, changes = make_split(root, seed=4)
    assert changes.created and len(split.val) == 1 and len(split.train) == 4
    data = json.loads((root / SPLIT_FILE).read_text())
    assert data["seed"] == 4 and data["val_fraction"] == 0.2
    assert sorted(data["cases"]) == ids
    val_id = split.val[0].case_id
    assert data["cases"][val_id] == "val"

    # re-run: nothing changes, the file is not rewritten
    mtime = (root / SPLIT_FILE).stat().st_mtime_ns
    again, changes = make_split(root)
    assert not changes.changed and (root / SPLIT_FILE).stat().st_mtime_ns == mtime
    assert [c.case_id for c in again.val] == [val_id]

    # a contradicting seed is refused rather than silently moving cases
    with pytest.raises(FedsegError, match="seed 4, not 5"):
        make_split(root, seed=5)
    with pytest.raises(FedsegError, match="val-fraction"):
        make_split(root, val_fraction=0.3)


def test_load_split_creates_updates_and_warns(tmp_path: Path, factory, caplog) -> None:
    ids = [f"c{i}" for i in range(10)]
    root = _site(tmp_path, factory, ids)
    split = load_split(root)
    assert (root / SPLIT_FILE).exists() and split.seed == 0
    assert len(split.val) == 2 and len(split.train) == 8
    assert {c.case_id for c in split.train + split.val} == set(ids)
    sides = {c.case_id: "val" for c in split.val} | {c.case_id: "train" for c in split.train}

    import shutil

    gone = split.train[0].case_id
    shutil.rmtree(root / gone)
    _site(root, factory, ["d0", "d1", "d2"])
    with caplog.at_level(logging.WARNING, logger="fedseg.data.splits"):
        split = load_split(root)
    assert gone in caplog.text and split.gone == (gone,)
    now = {c.case_id: "val" for c in split.val} | {c.case_id: "train" for c in split.train}
    assert all(now[c] == s for c, s in sides.items() if c != gone)
    assert json.loads((root / SPLIT_FILE).read_text())["gone"] == {gone: "train"}
    # loaded cases are real Case objects with their label
    assert all(c.label is not None and c.complete for c in split.train)


def test_incomplete_cases_are_skipped(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, ["a", "b", "c"])
    (root / "b" / "b_seg.nii.gz").unlink()
    (root / "c" / "c_flair.nii.gz").unlink()
    split, changes = make_split(root)
    assert changes.skipped == ("b", "c")
    assert [c.case_id for c in split.train + split.val] == ["a"]


def test_bad_split_file_and_fraction(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, ["a", "b"])
    with pytest.raises(FedsegError, match="between 0 and 1"):
        make_split(root, val_fraction=1.0)
    (root / SPLIT_FILE).write_text("{not json")
    with pytest.raises(FedsegError, match="not a valid split file"):
        load_split(root)


def test_empty_split_file_keeps_its_parameters(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, [f"c{i}" for i in range(10)])
    (root / SPLIT_FILE).write_text(SplitFile(seed=9, val_fraction=0.3).model_dump_json())
    split = load_split(root)
    assert (split.seed, split.val_fraction) == (9, 0.3)
    assert len(split.val) == 3
    expected = first_split([f"c{i}" for i in range(10)], 9, 0.3)
    assert {c.case_id for c in split.val} == {c for c, s in expected.items() if s is Side.VAL}


@pytest.mark.parametrize("n", [2, 3, 7, 8, 13])
def test_set_validation_cases_gives_exactly_n(tmp_path: Path, factory, n: int) -> None:
    """Every count 1..n-1 (first_split rounds n * (k / n) back to k); a file with another
    count is refused, one with that count kept."""
    for k in range(1, n):
        root = _site(tmp_path / f"{n}_{k}", factory, [f"c{i}" for i in range(n)])
        split = set_validation_cases(root, k)
        assert len(split.val) == k and len(split.train) == n - k
        assert [c.case_id for c in set_validation_cases(root, k).val] == [
            c.case_id for c in split.val
        ]
    if n > 2:  # root holds the split with n - 1 validation cases
        with pytest.raises(FedsegError, match=f"puts {n - 1} case"):
            set_validation_cases(root, 1)
    with pytest.raises(FedsegError, match=f"give it 1..{n - 1} validation cases, not {n}"):
        set_validation_cases(root, n)
