"""The report bounds and the norm bound as plain functions: one table per bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedseg.federation.rounds.aggregation import (
    UpdateRejected,
    clip_update,
    difference_norm,
    norm_bound,
)
from fedseg.federation.rounds.bounds import (
    check_counts,
    check_declaration,
    check_report,
    check_summary,
)
from fedseg.model.summary import Summary
from fedseg.run_folder import DeclaredCases

DECL = DeclaredCases(n_train=8, n_val=2)


@pytest.mark.parametrize(
    ("n_train", "n_val", "reason"),
    [
        (0, 0, None),
        (8, 2, None),
        (100_000, 100_000, None),
        (-1, 2, r"claims -1 training cases, outside \[0, 100000\]"),
        (8, -5, "claims -5 validation cases"),
        (10**9, 2, r"claims 1000000000 training cases, outside \[0, 100000\]"),
        (8, 100_001, "claims 100001 validation cases"),
    ],
)
def test_declaration_is_believed_only_within_max_cases(
    n_train: int, n_val: int, reason: str | None
) -> None:
    decl = DeclaredCases(n_train=n_train, n_val=n_val)
    if reason is None:
        check_declaration(decl, 100_000)
    else:
        with pytest.raises(UpdateRejected, match=reason):
            check_declaration(decl, 100_000)


@pytest.mark.parametrize(
    ("n_train", "n_val", "declared", "reason"),
    [
        (8, 2, DECL, None),
        (0, 0, DECL, None),  # fewer than declared (a case removed): fine
        (3, 1, DECL, None),
        (9, 2, DECL, "reports 9 training cases, more than the 8 it declared when it joined"),
        (10**9, 2, DECL, "reports 1000000000 training cases, more than the 8"),
        (-5, 2, DECL, r"reports -5 training cases \(negative\)"),
        (8, 3, DECL, "reports 3 validation cases, more than the 2"),
        (8, -1, DECL, r"reports -1 validation cases \(negative\)"),
        (8, 2, None, "declared no case counts when it joined"),
    ],
)
def test_counts_are_bounded_by_the_declaration(
    n_train: int, n_val: int, declared: DeclaredCases | None, reason: str | None
) -> None:
    if reason is None:
        check_counts(n_train, n_val, declared)
    else:
        with pytest.raises(UpdateRejected, match=reason):
            check_counts(n_train, n_val, declared)


NAN = float("nan")


@pytest.mark.parametrize(
    ("metric", "summary", "reason"),
    [
        ("dice", Summary(0.7, 0.1, 2), None),
        ("dice", Summary(0.0, 0.0, 1), None),
        ("dice", Summary(1.0, 0.5, 2), None),  # std of {0, 1}: the largest possible
        ("jaccard", Summary(0.3, 0.2, 2), None),
        ("sensitivity", Summary(1.0, 0.0, 2), None),
        ("specificity", Summary(0.99, 0.01, 2), None),
        ("hd95", Summary(373.13, 0.0, 2), None),
        ("hd95", Summary(12.5, 3.0, 2), None),
        ("dice", Summary(NAN, NAN, 0), None),  # no case had a value: carries nothing
        ("dice", Summary(1.0, 0.0, 10_000), "validation ET/dice over 10000 cases, declared 2"),
        ("dice", Summary(0.5, 0.1, -1), "over -1 cases"),
        ("dice", Summary(1.2, 0.1, 2), r"mean 1.2 outside \[0, 1\]"),
        ("dice", Summary(-0.1, 0.1, 2), "mean -0.1 outside"),
        ("jaccard", Summary(1.5, 0.1, 2), "mean 1.5 outside"),
        ("sensitivity", Summary(2.0, 0.0, 2), "outside"),
        ("specificity", Summary(-1.0, 0.0, 2), "outside"),
        ("hd95", Summary(400.0, 0.0, 2), r"mean 400.0 outside \[0, 373.13\]"),
        ("hd95", Summary(-1.0, 0.0, 2), "outside"),
        ("dice", Summary(NAN, 0.1, 2), "mean nan outside"),
        ("dice", Summary(math.inf, 0.1, 2), "mean inf outside"),
        ("dice", Summary(0.5, 0.6, 2), r"std 0.6 outside \[0, 0.5\]"),
        ("dice", Summary(0.5, -0.1, 2), "std -0.1 outside"),
        ("dice", Summary(0.5, NAN, 2), "std nan outside"),
        ("loss", Summary(0.5, 0.1, 2), "unknown metric"),
    ],
)
def test_validation_summary_is_within_its_metric_range_and_cases(
    metric: str, summary: Summary, reason: str | None
) -> None:
    if reason is None:
        check_summary("ET", metric, summary, 2)
    else:
        with pytest.raises(UpdateRejected, match=reason):
            check_summary("ET", metric, summary, 2)


def test_check_report_checks_counts_then_every_summary() -> None:
    ok = {"ET": {"dice": Summary(0.5, 0.1, 2)}, "mean": {"dice": Summary(0.6, 0.1, 2)}}
    check_report(8, 2, ok, DECL)
    bad = {**ok, "WT": {"hd95": Summary(1e9, 0.0, 2)}}
    with pytest.raises(UpdateRejected, match=r"validation WT/hd95: mean 1000000000\.0 outside"):
        check_report(8, 2, bad, DECL)
    with pytest.raises(UpdateRejected, match="declared no case counts"):
        check_report(8, 2, ok, None)


@pytest.mark.parametrize(
    ("norms", "ratio", "bound"),
    [
        ([1.0], 3.0, 3.0),
        ([1.0, 1e30], 3.0, 3.0),  # two sites: the lower median is the honest one
        ([1.0, 2.0, 1e30], 3.0, 6.0),
        ([1e30, 2.0, 1.0, 1.5], 2.0, 3.0),  # four: the lower of the middle two
        ([0.0, 0.0, 5.0], 3.0, 0.0),
    ],
)
def test_norm_bound_is_a_multiple_of_the_lower_median(
    norms: list[float], ratio: float, bound: float
) -> None:
    assert norm_bound(norms, ratio) == pytest.approx(bound)


def _w(value: float) -> dict[str, np.ndarray]:
    return {
        "a": np.full((3, 4), value, np.float32),
        "b": np.full((2,), value, np.float64),
        "count": np.array(7, np.int64),
    }


def test_clip_update_keeps_the_direction_at_the_bound() -> None:
    ref = _w(0.5)
    far = {k: (v + 3.0 if v.dtype.kind == "f" else np.array(99, np.int64))
           for k, v in ref.items()}  # fmt: skip
    d = difference_norm(far, ref)
    assert d == pytest.approx(3.0 * np.sqrt(14))
    clipped = clip_update(far, ref, 1.0)
    assert difference_norm(clipped, ref) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(clipped["a"], 0.5 + 3.0 / d, rtol=1e-6)
    assert clipped["a"].dtype == np.float32 and clipped["b"].dtype == np.float64
    assert int(clipped["count"]) == 99  # integer arrays are not part of the norm
    assert clip_update(far, ref, 2 * d) is far  # within the bound: untouched


def test_clip_update_tames_a_1e30_scaled_update() -> None:
    ref = _w(0.5)
    honest = {k: (v + 0.01 if v.dtype.kind == "f" else v) for k, v in ref.items()}
    scaled = {k: ((ref[k] + 1e30 * (v - ref[k])).astype(v.dtype) if v.dtype.kind == "f" else v)
              for k, v in honest.items()}  # fmt: skip
    assert all(np.isfinite(v).all() for v in scaled.values())
    bound = norm_bound([difference_norm(honest, ref), difference_norm(scaled, ref)], 3.0)
    clipped = clip_update(scaled, ref, bound)
    assert difference_norm(clipped, ref) == pytest.approx(bound, rel=1e-5)
    np.testing.assert_allclose(clipped["a"], 0.5 + 0.03, rtol=1e-4)  # 3x the honest step
