"""The site's on-disk cache of prepared cases, on real NIfTI files and real processes."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fedseg.train.case_cache as case_cache
from fedseg.data import nifti
from fedseg.data.cases import Case, discover_cases, load_case
from fedseg.errors import DataError
from fedseg.model.config import NetworkConfig
from fedseg.model.evaluate import evaluate_cases
from fedseg.model.registry import build_network, new_network
from fedseg.model.weights import Weights, get_weights, set_weights
from fedseg.train.case_cache import cache_folder, cache_size, entry_name, prepare_case
from fedseg.train.config import TrainConfig
from fedseg.train.loader import CaseStore
from fedseg.train.local import train_local
from fedseg.train.validate import network_models, validate_cases
from tests.helpers import run_fedseg
from tests.train.conftest import write_toy_site

PATCH = (16, 16, 16)
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def cases(tmp_path: Path) -> list[Case]:
    """Three tiny labelled cases in a fresh data folder (an empty cache)."""
    return write_toy_site(tmp_path / "data", 3, seed=4)


def _entries(root: Path) -> list[Path]:
    folder = cache_folder(root)
    return sorted(e for c in folder.iterdir() for e in c.iterdir()) if folder.is_dir() else []


def build_network_with(net: NetworkConfig, weights: Weights):  # type: ignore[no-untyped-def]
    module = build_network(net)
    set_weights(module, weights)
    return module.eval()


def _assert_equal_prepared(store: CaseStore, cases: list[Case]) -> None:
    for i, case in enumerate(cases):
        got, want = store.get(i), prepare_case(case, PATCH)
        for name in ("image", "regions", "tumor"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Case ids as ``prepare_case`` loads their NIfTI files (the real loader is called)."""
    calls: list[str] = []
    real = case_cache.load_case

    def counting(case: Case, **kw: object):  # type: ignore[no-untyped-def]
        calls.append(case.case_id)
        return real(case, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(case_cache, "load_case", counting)
    return calls


def test_cached_arrays_equal_prepare_case_and_are_memory_mapped(cases: list[Case]) -> None:
    root = cases[0].root
    assert root is not None
    store = CaseStore(cases, PATCH, cache_mb=0)
    assert store.cached == len(cases)
    assert len(_entries(root)) == len(cases)
    assert all(isinstance(store.get(i).image, np.memmap) for i in range(len(cases)))
    _assert_equal_prepared(store, cases)
    entries, size = cache_size(root)
    assert entries == len(cases) and size >= sum(store.get(i).nbytes for i in range(len(cases)))


def test_second_store_reads_the_cache_not_the_nifti(
    cases: list[Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_loads(monkeypatch)
    CaseStore(cases, PATCH, cache_mb=0)
    assert sorted(calls) == sorted(c.case_id for c in cases)
    # Overwrite every NIfTI with garbage of the same size and time stamp: a store that
    # read them would fail; the cached one still gives prepare_case's original arrays.
    want = [prepare_case(c, PATCH) for c in cases]
    calls.clear()
    for c in cases:
        for path in (*(s.path for s in c.images.values()), c.label):
            assert path is not None
            st = path.stat()
            path.write_bytes(b"\0" * st.st_size)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    store = CaseStore(cases, PATCH, cache_mb=0)
    assert calls == []
    for i, w in enumerate(want):
        np.testing.assert_array_equal(store.get(i).image, w.image)
        np.testing.assert_array_equal(store.get(i).regions, w.regions)


def test_touched_or_replaced_nifti_gives_a_new_entry(
    cases: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = cases[0].root
    assert root is not None
    CaseStore(cases, PATCH, cache_mb=0)
    before = _entries(root)
    calls = _count_loads(monkeypatch)
    # touched: same bytes, new mtime -> prepared again, the old entry removed
    flair = cases[1].images["flair"].path
    st = flair.stat()
    os.utime(flair, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    CaseStore(cases, PATCH, cache_mb=0)
    assert calls == [cases[1].case_id]
    after = _entries(root)
    assert len(after) == len(cases) and set(before) - set(after) == {
        e for e in before if e.parent.name == cases[1].case_id
    }
    # replaced by another case's file (other content): the arrays follow the new file
    calls.clear()
    other = write_toy_site(tmp_path / "other", 1, seed=9)[0]
    shutil.copyfile(other.images["t1"].path, cases[2].images["t1"].path)
    store = CaseStore(cases, PATCH, cache_mb=0)
    assert calls == [cases[2].case_id]
    assert len(_entries(root)) == len(cases)
    _assert_equal_prepared(store, cases)
    # a different patch size is its own entry and does not evict the first
    CaseStore(cases[:1], (48, 48, 48), cache_mb=0)
    names = [e.name for e in _entries(root) if e.parent.name == cases[0].case_id]
    assert sorted(names) == sorted([entry_name(cases[0], PATCH), entry_name(cases[0], (48,) * 3)])


def test_damaged_entry_is_prepared_again(cases: list[Case]) -> None:
    root = cases[0].root
    assert root is not None
    CaseStore(cases, PATCH, cache_mb=0)
    entry = next(e for e in _entries(root) if e.parent.name == cases[0].case_id)
    (entry / "image.npy").write_bytes(b"not an array")
    _assert_equal_prepared(CaseStore(cases, PATCH, cache_mb=0), cases)


_PREPARE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from fedseg.data.cases import discover_cases
    from fedseg.train.case_cache import prepare_case
    from fedseg.train.loader import CaseStore

    root, go, mapped = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "memmap"
    cases = discover_cases(root)
    while not go.exists():
        time.sleep(0.005)
    store = CaseStore(cases, (16, 16, 16), cache_mb=0)
    for i, case in enumerate(cases):
        want = prepare_case(case, (16, 16, 16))
        got = store.get(i)
        assert isinstance(got.image, np.memmap) == mapped, type(got.image)
        for name in ("image", "regions", "tumor"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    print("ok", store.cached)
    """
)


def _drop_root_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set, so a process running as root obeys file modes like any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _python(*args: str, obey_modes: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    root = obey_modes and os.geteuid() == 0
    return subprocess.Popen(
        [sys.executable, "-c", _PREPARE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, preexec_fn=_drop_root_override if root else None,
    )  # fmt: skip


def test_two_processes_preparing_the_same_cases_at_once(cases: list[Case], tmp_path: Path) -> None:
    root = cases[0].root
    assert root is not None
    go = tmp_path / "go"
    procs = [_python(str(root), str(go), "memmap") for _ in range(2)]
    go.touch()  # both start preparing the empty cache together
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.split() == ["ok", str(len(cases))]
    entries = _entries(root)
    assert len(entries) == len(cases)
    assert not [p for p in cache_folder(root).rglob("*") if p.name.startswith(".tmp-")]


def test_unwritable_cache_falls_back_to_memory_with_one_warning(
    cases: list[Case], caplog: pytest.LogCaptureFixture
) -> None:
    root = cases[0].root
    assert root is not None
    (root / ".fedseg").write_text("in the way")  # the cache folder cannot be made
    with caplog.at_level(logging.WARNING, logger="fedseg.train.loader"):
        store = CaseStore(cases, PATCH, cache_mb=64)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not writable" in lines[0] and "in memory" in lines[0]
    assert store.cached == len(cases)
    assert not isinstance(store.get(0).image, np.memmap)
    _assert_equal_prepared(store, cases)


def test_read_only_data_folder_trains_with_a_warning() -> None:
    """A data folder its process may not write (a root process without its override of file
    modes): correct arrays prepared in memory, one warning line, no cache."""
    top = Path(tempfile.mkdtemp(prefix="fedseg-ro-"))
    try:
        root = top / "data"
        write_toy_site(root, 2, seed=5)
        for p in [top, *root.rglob("*"), root]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        proc = _python(str(root), str(root), "memory", obey_modes=True)  # "go": root exists
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.split() == ["ok", "0"]  # prepared at each use (cache_mb=0 keeps none)
        warnings = [line for line in err.splitlines() if "not writable" in line]
        assert len(warnings) == 1, err
        assert not (root / ".fedseg").exists()
    finally:
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(top)


def test_training_is_the_same_with_and_without_the_cache(cases: list[Case]) -> None:
    net = NetworkConfig(base_filters=4, depth=2)
    train = TrainConfig.cpu(patch_size=PATCH, val_roi=PATCH, patches_per_case=2, batch_size=2)
    runs = [
        train_local(net, train, None, None, cases, 2, seed=7, case_cache=False),
        train_local(net, train, None, None, cases, 2, seed=7),  # cold: writes the cache
        train_local(net, train, None, None, cases, 2, seed=7),  # warm: reads it
    ]
    assert cases[0].root is not None and len(_entries(cases[0].root)) == len(cases)
    for other in runs[1:]:
        assert other.epoch_losses == runs[0].epoch_losses
        for k, w in runs[0].weights.items():
            np.testing.assert_array_equal(other.weights[k], w)


def test_cache_clear_command(cases: list[Case]) -> None:
    root = cases[0].root
    assert root is not None
    CaseStore(cases, PATCH, cache_mb=0)
    run = root / ".fedseg" / "run-1234"
    run.mkdir()
    res = run_fedseg("data", "cache-clear", root)
    assert res.returncode == 0, res.stderr
    assert f"removed {len(cases)} cached case(s)" in res.stdout
    assert not cache_folder(root).exists() and run.is_dir()  # run workspaces stay
    missing = run_fedseg("data", "cache-clear", root / "nowhere")
    assert missing.returncode != 0 and "not a folder" in missing.stderr
    assert discover_cases(root) == cases


def test_nifti_garbage_really_fails_to_load(cases: list[Case]) -> None:
    """The garbage of ``test_second_store_reads_the_cache_not_the_nifti`` is unreadable."""
    path = cases[0].images["t1"].path
    path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(Exception):  # noqa: B017
        nifti.load_array(path)


def test_a_writer_that_lost_the_race_keeps_the_winners_entry(cases: list[Case]) -> None:
    root = cases[0].root
    assert root is not None
    store = CaseStore(cases[:1], PATCH, cache_mb=0)
    entry = _entries(root)[0]
    stamp = (entry / "image.npy").stat().st_mtime_ns
    p = prepare_case(cases[0], PATCH)
    arrays = {"image": p.image, "regions": p.regions, "tumor": p.tumor}
    case_cache._write_entry(entry, arrays)  # renamed second: no error
    assert (entry / "image.npy").stat().st_mtime_ns == stamp
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # its temp folder is gone
    np.testing.assert_array_equal(store.get(0).image, prepare_case(cases[0], PATCH).image)


def test_validation_reads_the_cached_volumes_with_the_same_metrics(
    cases: list[Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = cases[0].root
    assert root is not None
    for case in cases:
        got, want = case_cache.cached_volumes(case, cache_folder(root)), load_case(case)
        for name in ("image", "label", "affine", "spacing"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    assert len(_entries(root)) == len(cases)  # one volumes entry each
    net = NetworkConfig(base_filters=4, depth=2)
    train = TrainConfig.cpu(patch_size=PATCH, val_roi=PATCH)
    weights = get_weights(new_network(net, None, seed=3))
    calls = _count_loads(monkeypatch)
    cached = validate_cases(net, train, weights, cases)
    assert calls == []  # every case from the cache
    models = network_models(build_network_with(net, weights), train)
    direct = evaluate_cases(cases, models, overlap=train.val_overlap, batch_size=2)
    assert [r.values for r in cached] == [r.values for r in direct]


def test_validation_without_a_writable_cache_reads_the_files(
    cases: list[Case], caplog: pytest.LogCaptureFixture
) -> None:
    root = cases[0].root
    assert root is not None
    (root / ".fedseg").write_text("in the way")
    net = NetworkConfig(base_filters=4, depth=2)
    train = TrainConfig.cpu(patch_size=PATCH, val_roi=PATCH)
    weights = get_weights(new_network(net, None, seed=3))
    with caplog.at_level(logging.WARNING, logger="fedseg.train.case_cache"):
        results = validate_cases(net, train, weights, cases)
    assert len(results) == len(cases)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not writable" in lines[0]


def test_a_missing_nifti_is_the_loaders_error_not_a_cache_warning(
    cases: list[Case], caplog: pytest.LogCaptureFixture
) -> None:
    cases[1].images["t2"].path.unlink()
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(DataError, match="file not found"),
    ):
        CaseStore(cases, PATCH, cache_mb=0)
    assert not [r for r in caplog.records if "not writable" in r.getMessage()]


def test_absent_channel_trains_as_zeros_and_completion_prepares_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site declaring FLAIR absent trains with that channel zero (the real-site-missing
    baseline); once `fedseg complete` writes its ``.syn`` images, the cache entries of the
    zero-filled channel are not reused: every case is prepared again, FLAIR now real data."""
    from fedseg.data.cases import MODALITIES, synthetic_image_path, write_synthetic_image
    from fedseg.data.site_config import SITE_CONFIG_FILE
    from fedseg.train.case_cache import VolumeReader

    full = write_toy_site(tmp_path / "data", 2, seed=5)
    root = full[0].root
    assert root is not None
    flairs = {c.case_id: nifti.load_array(c.images["flair"].path) for c in full}
    for c in full:
        c.images["flair"].path.unlink()
    (root / SITE_CONFIG_FILE).write_text("absent_modalities: [flair]\n")
    cases = discover_cases(root)
    assert all(c.absent == ("flair",) and c.complete for c in cases)
    flair = MODALITIES.index("flair")
    store = CaseStore(cases, PATCH, cache_mb=0)
    for i in range(len(cases)):
        image = store.get(i).image
        assert image.shape[0] == 4 and not image[flair].any() and image[0].any()
    vol = VolumeReader()(cases[0])
    assert vol.present == ("t1", "t1ce", "t2") and not vol.image[flair].any()
    zero_entries = _entries(root)
    # completion: same case ids, one more file each
    for c in cases:
        path = synthetic_image_path(c, "flair")
        write_synthetic_image(path, flairs[c.case_id], np.eye(4), "flair", "ab" * 32)
    completed = discover_cases(root)
    assert all(c.synthetic == ("flair",) and not c.absent for c in completed)
    assert all(
        entry_name(a, PATCH) != entry_name(b, PATCH) for a, b in zip(cases, completed, strict=True)
    )
    calls = _count_loads(monkeypatch)
    store = CaseStore(completed, PATCH, cache_mb=0)
    assert sorted(calls) == sorted(c.case_id for c in completed)
    _assert_equal_prepared(store, completed)
    assert all(store.get(i).image[flair].any() for i in range(len(completed)))
    assert not set(zero_entries) & set(_entries(root))  # the zero-filled entries are gone
    vol = VolumeReader()(completed[0])
    assert vol.present == MODALITIES and vol.image[flair].any()
