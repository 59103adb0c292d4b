"""The one rule that scores a model round (``curves.federation_curve``), as a table, and
the best round drawn from it (``selection.best_round``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedseg.model.summary import Summary
from fedseg.tracking.curves import Curves, federation_curve, round_scores
from fedseg.tracking.selection import best_round
from fedseg.tracking.store import RunStore

NAN = float("nan")


def _s(mean: float, n: int = 1, std: float = 0.0) -> Summary:
    return Summary(mean, std, n)


# (what the sites reported, sites asked, expected model_round -> score)
RULE_CASES: list[tuple[str, Curves, list[str] | None, dict[int, float]]] = [
    ("every site validated both rounds",
     {"a": {0: _s(0.5), 1: _s(0.7)}, "b": {0: _s(0.3), 1: _s(0.5)}}, None, {0: 0.4, 1: 0.6}),
    ("weighted by validation cases",
     {"a": {0: _s(0.8, 9)}, "b": {0: _s(0.2, 1)}}, None, {0: 0.74}),
    ("a round missing a site is no candidate",
     {"a": {0: _s(0.5), 1: _s(0.99)}, "b": {0: _s(0.5)}}, None, {0: 0.5}),
    ("a site validating late makes the earlier rounds ineligible",
     {"a": {0: _s(0.9), 1: _s(0.4), 2: _s(0.6)}, "b": {2: _s(0.6)}}, None, {2: 0.6}),
    ("a value without cases is no validation: that round is no candidate",
     {"a": {0: _s(0.5), 1: _s(0.9)}, "b": {0: _s(0.5), 1: _s(0.9, 0)}}, None, {0: 0.5}),
    ("a non-finite value is no validation",
     {"a": {0: _s(0.5), 1: _s(0.9)}, "b": {0: _s(0.5), 1: _s(NAN)}}, None, {0: 0.5}),
    ("a site that never validated is not in the population",
     {"a": {0: _s(0.5)}, "b": {}, "c": {0: _s(NAN, 0)}}, None, {0: 0.5}),
    ("sites asked: the population is drawn from them",
     {"a": {0: _s(0.5), 1: _s(0.9)}, "b": {0: _s(0.1)}}, ["a"], {0: 0.5, 1: 0.9}),
    ("nobody validated", {"a": {}}, None, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("curves", "sites", "expected"),
    [c[1:] for c in RULE_CASES],
    ids=[c[0] for c in RULE_CASES],
)
def test_round_score_rule(
    curves: Curves, sites: list[str] | None, expected: dict[int, float]
) -> None:
    got = federation_curve(curves, sites)
    assert list(got) == sorted(expected)
    assert {m: s.mean for m, s in got.items()} == pytest.approx(expected)


def test_score_carries_cases_and_pooled_std() -> None:
    got = federation_curve({"a": {0: _s(0.2, 1, 0.0)}, "b": {0: _s(0.6, 3, 0.0)}})[0]
    assert got.n == 4 and got.mean == pytest.approx(0.5)
    assert got.std == pytest.approx(math.sqrt((0.3**2 + 3 * 0.1**2) / 4))


def _store(run: Path, rows: dict[tuple[int, str], float], ckpts: list[int]) -> RunStore:
    store = RunStore(run)
    for (mr, site), v in rows.items():
        store.record_validation(mr, site, {"mean": {"dice": _s(v, 2)}, "ET": {"dice": _s(v, 2)}})
    for mr in ckpts:
        store.record_checkpoint(mr, run / f"m{mr}.pt")
    return store


@pytest.mark.parametrize(
    ("rows", "ckpts", "expected"),
    [
        ({(0, "a"): 0.5, (1, "a"): 0.7, (2, "a"): 0.7}, [0, 1, 2], (1, 0.7)),  # earliest tie
        ({(0, "a"): 0.5, (1, "a"): 0.7}, [0], (0, 0.5)),  # only rounds with a checkpoint
        ({(0, "a"): 0.5, (1, "b"): 0.7}, [0, 1], None),  # no round has every site
    ],
)  # fmt: skip
def test_best_round(
    tmp_path: Path,
    rows: dict[tuple[int, str], float],
    ckpts: list[int],
    expected: tuple[int, float] | None,
) -> None:
    with _store(tmp_path, rows, ckpts) as store:
        got = best_round(store)
        assert (got[0], got[1].mean) == expected if got else expected is None
        assert best_round(store, "ET") == got  # region ET has the same rows here
        assert round_scores(store) == federation_curve(
            {s: {mr: _s(v, 2) for (mr, site), v in rows.items() if site == s} for s in "ab"}
        )


def test_round_score_follows_the_runs_task(tmp_path: Path) -> None:
    """One rule, the run's metric and groups: a segmentation run's mean Dice of ET/TC/WT, a
    synthesis run's (meta ``task``) mean SSIM over the modalities each site validates."""
    from fedseg.run_folder import Task

    with RunStore(tmp_path) as store:
        for mr, (d, q) in enumerate(((0.5, 0.7), (0.6, 0.4))):
            store.record_validation(mr, "a", {g: {"dice": _s(d, 2)} for g in ("ET", "TC", "WT")})
            store.record_validation(mr, "a", {m: {"ssim": _s(q, 2)} for m in ("t1", "t2")})
        assert {m: s.mean for m, s in round_scores(store).items()} == pytest.approx(
            {0: 0.5, 1: 0.6}
        )
        assert best_round(store, require_checkpoint=False)[0] == 1  # type: ignore[index]
        store.meta.set_task(Task.SYNTHESIS)
        assert {m: s.mean for m, s in round_scores(store).items()} == pytest.approx(
            {0: 0.7, 1: 0.4}
        )
        assert best_round(store, require_checkpoint=False)[0] == 0  # type: ignore[index]
        assert round_scores(store, metric="dice") == {}  # modalities are its groups


# Issue 19 (decision D5): a site the round did not ask, or cut after quorum, is not expected
# to validate that round's model. (what the sites reported, excused per model round,
# expected model_round -> score)
EXCUSED_CASES: list[tuple[str, Curves, dict[int, set[str]], dict[int, float]]] = [
    ("a round scored on the sites asked (validators: trainers)",
     {"a": {0: _s(0.5), 1: _s(0.7)}, "b": {0: _s(0.3), 2: _s(0.1)}, "c": {0: _s(0.4)}},
     {1: {"b", "c"}, 2: {"a", "c"}}, {0: 0.4, 1: 0.7, 2: 0.1}),
    ("a site asked that did not validate still makes the round ineligible",
     {"a": {0: _s(0.5), 1: _s(0.9)}, "b": {0: _s(0.5)}, "c": {0: _s(0.5)}},
     {1: {"c"}}, {0: 0.5}),
    ("every:K: the rounds between are scored on the trainers, the K-th on everyone",
     {"a": {0: _s(0.2), 1: _s(0.6), 2: _s(0.4)}, "b": {0: _s(0.4), 2: _s(0.8, 3)}},
     {1: {"b"}}, {0: 0.3, 1: 0.6, 2: 0.7}),
    ("excusing every site of a round nobody validated makes no candidate",
     {"a": {0: _s(0.5)}, "b": {0: _s(0.5)}}, {1: {"a", "b"}}, {0: 0.5}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("curves", "excused", "expected"),
    [c[1:] for c in EXCUSED_CASES],
    ids=[c[0] for c in EXCUSED_CASES],
)
def test_round_score_rule_excuses_sites_not_asked(
    curves: Curves, excused: dict[int, set[str]], expected: dict[int, float]
) -> None:
    got = federation_curve(curves, excused=excused)
    assert list(got) == sorted(expected)
    assert {m: s.mean for m, s in got.items()} == pytest.approx(expected)
    # without the excuses every site is expected every round: the rule before issue 19
    strict = federation_curve(curves)
    common = set.intersection(*(set(c) for c in curves.values() if c))
    assert list(strict) == sorted(common)


def test_round_scores_read_who_was_asked_from_the_store(tmp_path: Path) -> None:
    """``not asked`` rows and a timeout cut after quorum excuse a site from model round
    ``round - 1``; a plain timeout does not."""
    from fedseg.run_folder import CUT_AFTER_QUORUM, SiteRoundStatus
    from fedseg.tracking.curves import excused_sites
    from fedseg.tracking.store import SiteRound

    rows = {(0, "a"): 0.5, (0, "b"): 0.5, (0, "c"): 0.5, (1, "a"): 0.7, (2, "a"): 0.9,
            (3, "a"): 0.2, (3, "b"): 0.4}  # fmt: skip
    with _store(tmp_path, rows, []) as store:
        store.record_site_round(SiteRound(2, "b", SiteRoundStatus.NOT_ASKED))
        store.record_site_round(SiteRound(2, "c", SiteRoundStatus.TIMEOUT,
                                          error="cut after quorum (1 of 2)",
                                          extra={CUT_AFTER_QUORUM: [1, 2]}))  # fmt: skip
        store.record_site_round(SiteRound(3, "b", SiteRoundStatus.NOT_ASKED))
        store.record_site_round(SiteRound(3, "c", SiteRoundStatus.TIMEOUT, error="no reply"))
        store.record_site_round(SiteRound(4, "c", SiteRoundStatus.NOT_ASKED))
        assert excused_sites(store) == {1: {"b", "c"}, 2: {"b"}, 3: {"c"}}
        got = round_scores(store)
        # model 1: b, c excused; model 2: c timed out (expected); model 3: c not asked
        assert {m: s.mean for m, s in got.items()} == pytest.approx({0: 0.5, 1: 0.7, 3: 0.3})
        assert best_round(store, require_checkpoint=False)[0] == 1  # type: ignore[index]
