"""The warm site cache (``train.warm``) on real NIfTI sites: reused while nothing changed,
rebuilt for the site whose case or split changed (the others' entries stay), bounded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedseg.data import nifti
from fedseg.data.cases import Case, load_case
from fedseg.data.splits import Side, read_split_file, write_split_file
from fedseg.data.synth.generate import make_tiny_dataset
from fedseg.train.config import TrainConfig
from fedseg.train.warm import SiteCache

TRAIN = TrainConfig.cpu(patch_size=(16, 16, 16), cache_mb=64)


@pytest.fixture
def sites(tmp_path: Path) -> dict[str, Path]:
    """Three fresh tiny sites of four cases (site3 gives a case away in some tests)."""
    make_tiny_dataset(tmp_path / "data", sites=3, cases_per_site=4)
    return {s: tmp_path / "data" / s for s in ("site1", "site2", "site3")}


def _ids(cases: list[Case] | tuple[Case, ...]) -> set[str]:
    return {c.case_id for c in cases}


def _rewrite_in_place(path: Path, tmp: Path) -> None:
    """Rewrite a NIfTI image in place (same file, same inode) with a changed array, then
    set its mtime one second later explicitly (a rewrite within one tick of the file
    system's clock would keep it)."""
    before = path.stat()
    arr = nifti.load_array(path)
    bump = (np.arange(arr.size, dtype=np.float32).reshape(arr.shape) % 7) * 10
    changed = np.where(arr > 0, arr + bump, 0).astype(np.float32)
    scratch = tmp / path.name
    nifti.save(scratch, changed, nifti.load_header(path).affine)
    shutil.copyfile(scratch, path)  # into the same inode
    assert path.stat().st_ino == before.st_ino
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))


def test_an_unchanged_site_is_reused_with_what_it_holds(sites: dict[str, Path]) -> None:
    cache = SiteCache()
    warm = cache.get(sites["site1"])
    assert cache.get(sites["site1"]) is warm and (cache.builds, cache.hits) == (1, 1)
    assert len(warm.split.train) == 3 and len(warm.split.val) == 1
    assert _ids(warm.cases) == _ids(warm.split.train) | _ids(warm.split.val)
    store = warm.store(TRAIN)
    assert cache.get(sites["site1"]).store(TRAIN) is store and store.cached == 3
    case = warm.split.val[0]
    vol = warm.read(case)
    assert cache.get(sites["site1"]).read(case) is vol
    fresh = load_case(case)
    assert np.array_equal(vol.image, fresh.image) and np.array_equal(vol.label, fresh.label)
    # held volumes are read-only: a caller writing into one would change the next task's
    assert not vol.image.flags.writeable and not vol.label.flags.writeable  # type: ignore[union-attr]
    assert cache.get(sites["site1"], sites["site1"] / "fedseg_split.json") is warm
    other, held = warm.split.train[0], warm.held()  # not a validation case: read, not kept
    assert warm.read(other) is not warm.read(other) and warm.held() == held


def test_a_case_added_or_removed_rebuilds_that_site_only(sites: dict[str, Path]) -> None:
    cache = SiteCache()
    one, two = cache.get(sites["site1"]), cache.get(sites["site2"])
    one.store(TRAIN)
    shutil.move(sites["site3"] / "site3_000", sites["site1"] / "site3_000")
    added = cache.get(sites["site1"])
    assert added is not one and "site3_000" in _ids(added.cases)
    assert "site3_000" in _ids(added.split.train) | _ids(added.split.val)
    assert "site3_000" in read_split_file(sites["site1"] / "fedseg_split.json").cases  # type: ignore[union-attr]
    # filing the new case wrote the split file: the entry's key is the file as written
    assert cache.get(sites["site1"]) is added
    assert cache.get(sites["site2"]) is two
    if "site3_000" in _ids(added.split.train):
        assert len(added.store(TRAIN)) == 4
    shutil.rmtree(sites["site1"] / "site3_000")
    removed = cache.get(sites["site1"])
    assert removed is not added and "site3_000" not in _ids(removed.cases)
    assert _ids(removed.split.train) | _ids(removed.split.val) == _ids(one.cases)
    assert cache.get(sites["site2"]) is two


def test_a_case_edited_is_seen_by_the_next_task(sites: dict[str, Path], tmp_path: Path) -> None:
    cache = SiteCache()
    one, two = cache.get(sites["site1"]), cache.get(sites["site2"])
    val = one.split.val[0]
    old_vol = one.read(val)
    store = one.store(TRAIN)
    old_train = np.array(store.get(0).image)
    # a validation case's image rewritten in place
    _rewrite_in_place(val.images["t1"].path, tmp_path)
    edited = cache.get(sites["site1"])
    assert edited is not one and cache.get(sites["site2"]) is two
    new_vol = edited.read(edited.split.val[0])
    assert not np.array_equal(new_vol.image, old_vol.image)
    assert np.array_equal(new_vol.image, load_case(edited.split.val[0]).image)
    # a training case's image rewritten in place: its prepared arrays are made again
    _rewrite_in_place(edited.split.train[0].images["flair"].path, tmp_path)
    again = cache.get(sites["site1"])
    assert again is not edited
    assert not np.array_equal(np.asarray(again.store(TRAIN).get(0).image), old_train)
    # only the mtime changes (a file touched): rebuilt too
    os.utime(again.split.train[1].label, ns=(1, 2))  # type: ignore[arg-type]
    assert cache.get(sites["site1"]) is not again
    assert cache.get(sites["site2"]) is two


def test_the_split_edited_is_seen_by_the_next_task(sites: dict[str, Path]) -> None:
    cache = SiteCache()
    one, two = cache.get(sites["site1"]), cache.get(sites["site2"])
    moved = one.split.val[0].case_id
    path = sites["site1"] / "fedseg_split.json"
    record = read_split_file(path)
    assert record is not None
    record.cases[moved] = Side.TRAIN
    record.cases[one.split.train[0].case_id] = Side.VAL
    before = path.stat().st_mtime_ns
    write_split_file(path, record)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    edited = cache.get(sites["site1"])
    assert edited is not one
    assert moved in _ids(edited.split.train) and moved not in _ids(edited.split.val)
    assert cache.get(sites["site1"]) is edited and cache.get(sites["site2"]) is two


def test_the_least_recently_used_site_is_evicted_by_the_budget(sites: dict[str, Path]) -> None:
    """A tiny volume is 4 x 60 x 60 x 39 float32 (2.2 MB) plus its label: a 3 MB budget
    holds one site's validation case, not two."""
    cache = SiteCache(budget_mb=3)
    one = cache.get(sites["site1"])
    vol = one.read(one.split.val[0])
    assert one.held()[0] > 2**21 and one.read(one.split.val[0]) is vol
    two = cache.get(sites["site2"])
    assert one in cache and two in cache  # two holds nothing yet
    two.read(two.split.val[0])
    assert one not in cache and two in cache and len(cache) == 1
    assert cache.get(sites["site1"]) is not one
    # a volume larger than the whole budget is read, not kept
    small = SiteCache(budget_mb=1)
    three = small.get(sites["site3"])
    got = three.read(three.split.val[0])
    assert three.read(three.split.val[0]) is not got and three.held() == (0, 0)
    assert np.array_equal(got.image, load_case(three.split.val[0]).image)


def test_the_open_memory_maps_are_bounded_too(sites: dict[str, Path]) -> None:
    """Each memory-mapped array holds an open file: the site in use keeps its store, and
    the others are evicted until the process's bound holds."""
    cache = SiteCache(max_files=5)
    one = cache.get(sites["site1"])
    one.store(TRAIN)
    assert one.held() == (0, 9) and one in cache  # 3 cases x 3 arrays; in use: kept
    two = cache.get(sites["site2"])
    assert one not in cache and two in cache


def test_the_optimizer_state_is_held_while_its_file_is_unchanged(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    """The state saved here is given back without reading its file, read-only and equal to
    the file's; a file changed on disk (another process, a restart) is read again; other
    files are read; what is held counts against the budget."""
    from fedseg.model.weights import load_arrays, save_arrays

    cache = SiteCache()
    warm = cache.get(sites["site1"])
    state = {"step": np.array(3, np.int64), "exp_avg/w": np.arange(6, dtype=np.float32)}
    path = tmp_path / "ws" / "optimizer_0001.npz"
    before = warm.held()[0]
    warm.save_optimizer(path, state)
    assert warm.held()[0] == before + 8 + 24
    got = warm.optimizer(path)
    assert cache.optimizer_hits == 1 and got["exp_avg/w"] is state["exp_avg/w"]
    assert not got["exp_avg/w"].flags.writeable
    disk = load_arrays(path)
    assert list(got) == list(disk) and all(np.array_equal(got[k], disk[k]) for k in disk)
    # the file replaced on disk: the next task reads it
    save_arrays(path, {"step": np.array(4, np.int64), "exp_avg/w": np.ones(6, np.float32)})
    again = warm.optimizer(path)
    assert cache.optimizer_hits == 1 and int(again["step"]) == 4
    assert warm.optimizer(path) is again and cache.optimizer_hits == 2  # now held
    other = tmp_path / "ws" / "optimizer_0000.npz"
    save_arrays(other, state)
    assert int(warm.optimizer(other)["step"]) == 3 and cache.optimizer_hits == 2
