"""`check_case` / `check_dataset`: a clean case passes and each problem kind is caught."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.data.cases import discover_cases
from fedseg.data.checks import Severity, check_case, check_dataset
from fedseg.data.labels import Layout


def _site(root: Path, factory, layout: Layout = Layout.BRATS2021, n: int = 2) -> Path:
    for i in range(n):
        image, label = factory.volumes(seed=i)
        factory.write(root, layout, f"case{i:03d}", image, label)
    return root


def _problems(root: Path) -> dict[str, set[tuple[str, str]]]:
    """case id -> {(severity, code)} over the whole site."""
    report = check_dataset(root)
    return {r.case_id: {(p.severity.value, p.code) for p in r.problems} for r in report.cases}


def test_clean_site_passes(tmp_path: Path, factory, layout: Layout) -> None:
    report = check_dataset(_site(tmp_path, factory, layout, n=3))
    assert report.layout is layout
    assert [r.status for r in report.cases] == ["ok"] * 3
    assert (report.ok, report.with_warnings, report.with_errors) == (3, 0, 0)
    assert report.passed
    for case in discover_cases(tmp_path):
        assert check_case(case) == []


def _f(root: Path, key: str) -> Path:
    return root / "case000" / f"case000_{key}.nii.gz"


def _rewrite(root: Path, factory, key: str, edit: Callable[[np.ndarray], np.ndarray], **kw) -> None:
    import nibabel as nib

    data = np.asanyarray(nib.load(str(_f(root, key))).dataobj)
    factory.save_raw(_f(root, key), edit(data.copy()), **kw)


def _shifted(factory, dx: float) -> np.ndarray:
    a = factory.affine.copy()
    a[0, 3] += dx
    return a


BREAKERS: dict[str, tuple[Callable[[Path, object], None], set[tuple[str, str]]]] = {}


def breaker(name: str, *expected: tuple[str, str]):
    def deco(fn):
        BREAKERS[name] = (fn, set(expected))
        return fn

    return deco


@breaker("missing-image", ("error", "missing-image"))
def _missing_image(root: Path, factory) -> None:
    _f(root, "t1ce").unlink()


@breaker("unreadable-header", ("error", "unreadable-image"))
def _unreadable_header(root: Path, factory) -> None:
    _f(root, "flair").write_bytes(b"not a nifti file at all")


@breaker("unreadable-data", ("error", "unreadable-image"))
def _unreadable_data(root: Path, factory) -> None:
    path = _f(root, "t2")
    factory.save_raw(path.with_suffix(""), np.ones((10, 12, 8), np.float32))  # uncompressed
    raw = path.with_suffix("").read_bytes()
    path.with_suffix("").unlink()
    import gzip

    path.write_bytes(gzip.compress(raw)[:-200])  # header intact, voxels truncated


@breaker("missing-label", ("error", "missing-label"))
def _missing_label(root: Path, factory) -> None:
    _f(root, "seg").unlink()  # case001 has a label, so this site is labelled


@breaker("unreadable-label", ("error", "unreadable-label"))
def _unreadable_label(root: Path, factory) -> None:
    _f(root, "seg").write_bytes(b"\x00" * 10)


@breaker("shape-mismatch", ("error", "shape-mismatch"))
def _shape(root: Path, factory) -> None:
    _rewrite(root, factory, "t2", lambda d: d[:-1])


@breaker("label-shape-mismatch", ("error", "shape-mismatch"))
def _label_shape(root: Path, factory) -> None:
    _rewrite(root, factory, "seg", lambda d: d[:, :-2])


@breaker("spacing-mismatch", ("error", "spacing-mismatch"))
def _spacing(root: Path, factory) -> None:
    a = factory.affine.copy()
    a[2, 2] = 2.0
    _rewrite(root, factory, "flair", lambda d: d, affine=a)


@breaker("orientation-mismatch", ("error", "orientation-mismatch"))
def _orientation(root: Path, factory) -> None:
    a = factory.affine.copy()
    a[0, 0] = -1.5  # RAS -> LAS
    _rewrite(root, factory, "seg", lambda d: d[::-1], affine=a)


@breaker("affine-mismatch", ("error", "affine-mismatch"))
def _affine(root: Path, factory) -> None:
    _rewrite(root, factory, "t1ce", lambda d: d, affine=_shifted(factory, 2.0))


@breaker("affine-within-tolerance")
def _affine_ok(root: Path, factory) -> None:
    _rewrite(root, factory, "t1ce", lambda d: d, affine=_shifted(factory, 1e-5))


@breaker("non-finite", ("error", "non-finite"))
def _nan(root: Path, factory) -> None:
    def edit(d: np.ndarray) -> np.ndarray:
        d[3, 3, 3] = np.nan
        d[4, 4, 4] = np.inf
        return d

    _rewrite(root, factory, "t1", edit)


@breaker("empty-image", ("error", "empty-image"))
def _empty(root: Path, factory) -> None:
    _rewrite(root, factory, "flair", np.zeros_like)


@breaker("negative-intensity", ("warning", "negative-intensity"))
def _negative(root: Path, factory) -> None:
    _rewrite(root, factory, "t2", lambda d: d - 50)


@breaker("empty-tumor", ("warning", "empty-tumor"))
def _empty_tumor(root: Path, factory) -> None:
    _rewrite(root, factory, "seg", np.zeros_like)


@breaker("label-values", ("error", "label-values"))
def _label_values(root: Path, factory) -> None:
    _rewrite(root, factory, "seg", lambda d: np.where(d == 4, 7, d).astype(np.uint8))


@breaker("label-not-integer", ("error", "label-not-integer"))
def _label_float(root: Path, factory) -> None:
    _rewrite(root, factory, "seg", lambda d: d.astype(np.float32) * 0.5)


@breaker("bad-dimensions", ("error", "bad-dimensions"))
def _bad_dims(root: Path, factory) -> None:
    _rewrite(root, factory, "t1", lambda d: np.stack([d, d], axis=-1))


@pytest.mark.parametrize("name", list(BREAKERS))
def test_each_problem_is_caught(tmp_path: Path, factory, name: str) -> None:
    fn, expected = BREAKERS[name]
    root = _site(tmp_path, factory)
    fn(root, factory)
    found = _problems(root)
    assert found["case000"] == expected
    assert found["case001"] == set()  # the other case stays clean
    report = check_dataset(root)
    assert report.passed == all(sev == "warning" for sev, _ in expected)
    for problem in report.cases[0].problems:
        assert problem.case_id == "case000" and problem.message and "\n" not in problem.message


def test_label_hint_names_the_other_layout(tmp_path: Path, factory) -> None:
    root = _site(tmp_path / "b21", factory)
    _rewrite(root, factory, "seg", lambda d: np.where(d == 4, 3, d).astype(np.uint8))
    (problem,) = check_dataset(root).cases[0].problems
    assert problem.code == "label-values" and "[3]" in problem.message
    assert "looks like BraTS 2023+ labels (ET=3)" in problem.message

    msd = _site(tmp_path / "msd", factory, Layout.MSD, n=1)
    label_path = msd / "labelsTr" / "case000.nii.gz"
    import nibabel as nib

    data = np.asanyarray(nib.load(str(label_path)).dataobj).copy()
    data[data == 3] = 4  # someone saved BraTS 2021 labels into the Task01 folder
    factory.save_raw(label_path, data)
    (problem,) = check_dataset(msd).cases[0].problems
    assert "looks like BraTS 2017-2021 labels (ET=4)" in problem.message


def test_msd_problems(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, Layout.MSD)
    (root / "labelsTr" / "case000.nii.gz").unlink()
    img = root / "imagesTr" / "case001.nii.gz"
    import nibabel as nib

    data = np.asanyarray(nib.load(str(img)).dataobj).copy()
    data[..., 2] = 0  # T1gd channel empty
    factory.save_raw(img, data)
    found = _problems(root)
    assert found["case000"] == {("error", "missing-label")}
    assert found["case001"] == {("error", "empty-image")}
    (msg,) = [p.message for p in check_dataset(root).cases[1].problems]
    assert msg.startswith("t1ce")  # channel 2 of a Task01 image is T1gd

    factory.save_raw(img, data[..., :3])
    assert _problems(root)["case001"] == {("error", "bad-dimensions")}


def test_unlabelled_site_needs_no_labels(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory, Layout.BRATS2023)
    for seg in root.glob("*/*-seg.nii.gz"):
        seg.unlink()
    assert check_dataset(root).passed


def test_duplicate_case_ids(tmp_path: Path, factory) -> None:
    image, label = factory.volumes()
    factory.write(tmp_path / "a", Layout.BRATS2021, "same", image, label)
    factory.write(tmp_path / "b", Layout.BRATS2021, "same", image, label)
    for d in ("a", "b"):
        (tmp_path / d / "same").rename(tmp_path / f"site_{d}")
    report = check_dataset(tmp_path)
    codes = [p.code for r in report.cases for p in r.problems]
    assert codes == ["duplicate-id"]


def test_severities_are_enums(tmp_path: Path, factory) -> None:
    root = _site(tmp_path, factory)
    _rewrite(root, factory, "t2", lambda d: d - 50)
    (problem,) = check_dataset(root).cases[0].problems
    assert problem.severity is Severity.WARNING


def test_swapped_ncr_and_edema_is_flagged(tmp_path: Path, factory, layout: Layout) -> None:
    """MSD labels (1 ED, 2 NET) saved as BraTS ones, or the reverse, keep valid values; only
    where they lie gives them away."""
    from fedseg.data.labels import from_brats2021

    image, label = factory.volumes()
    swapped = label.copy()
    swapped[label == 1], swapped[label == 2] = 2, 1
    factory.write(tmp_path, layout, "good", image, label)
    factory.write(tmp_path, layout, "swapped", image, swapped)
    assert sorted(np.unique(from_brats2021(swapped, layout)).tolist()) == sorted(
        np.unique(from_brats2021(label, layout)).tolist()
    )
    found = _problems(tmp_path)
    assert found["good"] == set()
    assert found["swapped"] == {("warning", "label-order")}


def test_streams_one_case_at_a_time_reading_each_file_once(
    tmp_path: Path, factory, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    import nibabel as nib

    from fedseg.data import checks

    _site(tmp_path, factory, layout, n=3)
    opened: Counter[str] = Counter()
    real_load = nib.load

    def counting_load(path, *args, **kwargs):  # the real loader, with a tally
        opened[str(Path(path).relative_to(tmp_path))] += 1
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(checks.nifti.nib, "load", counting_load)
    reports = checks.iter_checks(discover_cases(tmp_path))
    first = next(reports)
    assert first.case_id == "case000" and first.status == "ok"
    assert opened and all("case000" in name for name in opened)  # nothing of later cases yet
    rest = list(reports)
    assert [r.status for r in rest] == ["ok", "ok"]
    files_per_case = 2 if layout is Layout.MSD else 5
    assert len(opened) == 3 * files_per_case and set(opened.values()) == {1}
