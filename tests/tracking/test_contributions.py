from __future__ import annotations

import numpy as np
import pytest

from fedseg.model.summary import Summary
from fedseg.plan import AlarmConfig
from fedseg.tracking.contributions import (
    contributions,
    estimate_contributions,
    estimate_kind,
    leave_one_site_out,
    loso_contributions,
    round_shares,
)
from fedseg.tracking.store import CROSS_DICE_DIFF, WITHOUT_DICE_DIFF, CrossRow, RunStore, SiteRound
from tests.tracking.conftest import rising


def test_shares_from_norms_match_the_vectors() -> None:
    rng = np.random.default_rng(0)
    n_train = {"a": 30.0, "b": 50.0, "c": 20.0}
    u = {s: rng.normal(0, 1, 200) + 2.0 for s in n_train}
    u["c"] = -u["c"]  # an update pointing against the others
    p = {s: n / sum(n_train.values()) for s, n in n_train.items()}
    step = sum(p[s] * u[s] for s in u)
    norm = {s: float(np.linalg.norm(u[s])) for s in u}
    dist = {s: float(np.linalg.norm(u[s] - step)) for s in u}
    w, share, cos, dn = round_shares(n_train, norm, dist)
    assert w == pytest.approx(p)
    assert dn == pytest.approx(np.linalg.norm(step))
    for s in u:
        assert share[s] == pytest.approx(p[s] * u[s] @ step / (step @ step))
        assert cos[s] == pytest.approx(u[s] @ step / (norm[s] * np.linalg.norm(step)))
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["c"] < 0 < share["a"]


def test_store_contributions_reward_aligned_sites(tmp_path) -> None:
    rng = np.random.default_rng(1)
    base = rising(6)
    with RunStore(tmp_path / "run") as store:
        for mr, v in enumerate(base):
            for s in ("a", "b", "c"):
                store.record_validation(mr, s, {"mean": {"dice": Summary(v, 0.1, 10)}})
        for rnd in range(1, 6):
            u = {s: rng.normal(0, 0.2, 100) + 1.0 for s in "ab"}
            u["c"] = rng.normal(0, 1.0, 100)  # noise only: not aligned with the others
            step = sum(u.values()) / 3
            for s in "abc":
                store.record_site_round(
                    SiteRound(
                        rnd,
                        s,
                        "ok",
                        n_train=10,
                        update_norm=float(np.linalg.norm(u[s])),
                        update_distance=float(np.linalg.norm(u[s] - step)),
                    )
                )
        rows = {c.site: c for c in contributions(store)}
    assert rows["a"].rounds == 5
    total_gain = base[5] - base[0]
    assert sum(c.dice_gain for c in rows.values()) == pytest.approx(total_gain)
    assert rows["c"].dice_gain < 0.5 * rows["a"].dice_gain
    assert rows["c"].mean_cos < 0.5 < rows["a"].mean_cos


def test_leave_one_site_out_from_curves() -> None:
    full = {s: {0: Summary(0.2, 0.1, 10), 1: Summary(0.7, 0.1, 10)} for s in "abc"}
    without_c = {s: {0: Summary(0.2, 0.1, 10), 1: Summary(0.6, 0.1, 10)} for s in "ab"}
    without_a = {s: {0: Summary(0.2, 0.1, 10), 1: Summary(0.75, 0.1, 10)} for s in "bc"}
    out = loso_contributions(full, {"c": without_c, "a": without_a})
    assert out["c"] == pytest.approx(0.1)  # the others lose 0.1 Dice without c
    assert out["a"] == pytest.approx(-0.05)  # they do better without a


def test_leave_one_site_out_runs_one_federation_per_site(make_run) -> None:
    base = rising(5)
    full = make_run({"a": base, "b": base, "c": base})
    # The runs "without" a site: the others reach 0.05 less without c, the same without a/b.
    runs = {
        "a": make_run({"b": base, "c": base}),
        "b": make_run({"a": base, "c": base}),
        "c": make_run({"a": [v - 0.05 for v in base], "b": [v - 0.05 for v in base]}),
    }
    asked: list[str] = []

    def run_without(site: str):
        asked.append(site)
        return runs[site]

    out = leave_one_site_out(full, run_without)
    assert asked == ["a", "b", "c"]
    assert out["c"] == pytest.approx(0.05) and out["a"] == pytest.approx(0.0)


# -- from the cross-site evidence -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["eroded", "shifted", "scramble", "swapped"])
def test_mislabeled_site_is_the_most_harmful(tmp_path, kind) -> None:
    from tests.tracking.cross_fixtures import build_cross_run, profile
    from tests.tracking.test_cross_alarms import federation

    # contributions are read after the last round: the benchmark's medians there (seeds
    # 0-19, round 8) for the kinds whose effect still grows after round 6
    end = {
        "shifted": profile("shifted", away={"ET": -0.34, "TC": -0.14, "WT": 0.0}),
        "eroded": profile("eroded", away={"ET": -0.48, "TC": -0.27, "WT": -0.03}),
    }
    scanner = profile("scanner", away={"ET": -0.03, "TC": -0.12, "WT": -0.23})
    for seed in (0, 1, 3):
        sites = federation(end.get(kind, kind), scan=scanner)
        run = build_cross_run(tmp_path / f"r{seed}", sites, seed=seed)
        with RunStore(run) as store:
            est = estimate_contributions(store)
        by = {e.site: e for e in est}
        assert est[0].site == "bad" and est[0].verdict == "harmful", (seed, est[:2])
        assert est[0].effect < 0 and est[0].high < 0 and est[0].low < est[0].effect
        if kind == "swapped":
            assert est[0].region == "TC"
        # the clean, hard and small sites are not harmful; the scanner site may honestly be
        assert all(by[s].verdict != "harmful" for s in ("c1", "c2", "hard", "tiny"))
        assert by["hard"].effect > by["bad"].effect and by["hard"].per_region["mean"] > -0.05
        # first-order terms are centred: with equal weights they sum to zero per region
        for g in ("ET", "TC", "WT", "mean"):
            assert sum(e.per_region[g] for e in est) == pytest.approx(0.0, abs=1e-9)
        assert est[0].n_cases >= 9 and "bad" not in est[0].evaluators
        assert est[0].model_rounds == tuple(range(1, 9))


def _away_rows(model_round: int, model: str, evaluator: str, metric: str,
               mean: dict[str, float], sd: float = 0.02, n: int = 4) -> list[CrossRow]:  # fmt: skip
    """One model's away rows at one evaluator: ``metric`` per region with that mean."""
    return [CrossRow(model_round + 1, model, model_round, evaluator, model_round, g, metric,
                     Summary(m, sd, n)) for g, m in mean.items()]  # fmt: skip


def test_measured_models_without_a_site_decide_over_the_first_order(tmp_path) -> None:
    """Site a's local models lose 0.20 ET on the others' cases (a whole local training
    away from the mean), but leaving it out of the mean changes nothing; leaving b out
    gains the others 0.04 ET. The measured estimate finds b harmful, a neutral; the
    first-order one (the local models alone) blames a. Round 3 has no models without the
    sites: its part stays first-order."""
    sites = ("a", "b", "c", "d")
    local = {"a": -0.20, "b": -0.05, "c": -0.05, "d": -0.05}
    without = {"a": 0.0, "b": 0.04, "c": -0.01, "d": -0.01}
    with RunStore(tmp_path / "run") as store:
        for mr in (1, 2, 3):
            rows: list[CrossRow] = []
            for s in sites:
                store.record_site_round(SiteRound(mr, s, "ok", n_train=10))
                for e in sites:
                    if e == s:
                        continue
                    rows += _away_rows(mr, s, e, CROSS_DICE_DIFF,
                                       {"ET": local[s], "TC": -0.02, "WT": -0.02})  # fmt: skip
                    if mr < 3:
                        rows += _away_rows(mr, s, e, WITHOUT_DICE_DIFF,
                                           {"ET": without[s], "TC": 0.0, "WT": 0.0})  # fmt: skip
            store.record_cross(rows)
        est = {e.site: e for e in estimate_contributions(store)}
        first = estimate_contributions(store, measured=False)
    assert min(est.values(), key=lambda e: e.effect).site == "b"
    assert first[0].site == "a" and first[0].verdict == "harmful"
    # b: -0.04 measured in rounds 1 and 2, plus round 3's first-order part (centred: b's
    # local model is as good as c's and d's, better than a's, so it gains there)
    scale = (10 / 40) / (1 - 10 / 40)
    centred = {s: local[s] - sum(local.values()) / 4 for s in sites}
    for s in sites:
        assert est[s].per_region["ET"] == pytest.approx(-2 * without[s] + scale * centred[s])
        assert est[s].measured_rounds == (1, 2) and est[s].model_rounds == (1, 2, 3)
        assert est[s].evaluators == tuple(e for e in sites if e != s)
    assert est["b"].verdict == "harmful" and est["b"].region == "ET"
    assert est["a"].per_region["ET"] == pytest.approx(scale * centred["a"])
    # the measured parts carry their own spread: 2 rounds of sd 0.02 over 3 x 4 cases
    assert est["b"].se < est["b"].per_region["ET"] * -0.5
    assert estimate_kind(list(est.values())) == (
        "leave-one-out, measured in 8 of 12 site-rounds, first-order in the rest"
    )
    assert estimate_kind(first).startswith("first-order")


def test_estimate_uses_rounds_up_to_and_is_empty_without_cross_rows(tmp_path) -> None:
    from tests.tracking.cross_fixtures import build_cross_run
    from tests.tracking.test_cross_alarms import federation

    run = build_cross_run(tmp_path / "run", federation("eroded"), seed=0)
    with RunStore(run) as store:
        early = estimate_contributions(store, upto_round=4)
        assert all(e.model_rounds == (1, 2, 3) for e in early)
        assert estimate_contributions(store, cfg=AlarmConfig(enabled=False)) == []
    plain = build_cross_run(tmp_path / "plain", federation("eroded"), seed=0, cross=False)
    with RunStore(plain) as store:
        assert estimate_contributions(store) == []
        assert any(c.rounds for c in contributions(store))  # the fallback still works


@pytest.mark.parametrize("width", [80, 140])
def test_contributions_cli_fits_the_terminal(tmp_path, width) -> None:
    from tests.helpers import run_fedseg
    from tests.tracking.cross_fixtures import build_cross_run
    from tests.tracking.test_cross_alarms import federation

    run = build_cross_run(tmp_path / "run", federation("eroded"), seed=0)
    res = run_fedseg("contributions", run, env={"COLUMNS": str(width)})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "…" not in res.stdout and max(len(ln) for ln in lines) <= width
    row = next(ln for ln in lines if "│ bad " in ln)
    assert "harmful" in row and ("+0." in res.stdout) and (("ET" in lines[3]) == (width > 110))
