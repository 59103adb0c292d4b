from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from fedseg.model.summary import Summary
from fedseg.tracking.alarms import (
    BELOW,
    OUTLIER,
    STALLED,
    AlarmConfig,
    below_federation,
    check_alarms,
    first_flagged,
    replay_alarms,
    site_tests,
    stalled,
    update_outliers,
    volatility,
)
from fedseg.tracking.store import RunStore
from tests.tracking.conftest import noisy, rising

CFG = AlarmConfig()


def test_site_015_below_for_6_rounds_is_flagged_clean_noisy_sites_are_not(make_run) -> None:
    base = rising(8)
    run = make_run(
        {
            "a": noisy(base, 0.02, 1),
            "b": noisy(base, 0.02, 2),
            "bad": [v - 0.15 for v in noisy(base, 0.02, 3)],
            "c": noisy(base, 0.02, 4),
        }
    )
    with RunStore(run) as store:
        alarms = replay_alarms(store, CFG)
        stored = store.alarms()
    first = first_flagged(alarms)
    # Round r has models 1..r-1 after skipping the initial one: 5 pairs after round 6.
    assert first[("bad", BELOW)] == 6
    assert {a.site for a in alarms} == {"bad"}
    assert stored == sorted(alarms, key=lambda a: (a.round, a.site, a.kind))
    assert "below the other sites by 0.1" in alarms[0].message


def _curves(site, others: dict, n: int = 10, sd: float = 0.1) -> dict:
    """Curves (models 1..L) of site ``s`` and the ``others`` from value arrays."""
    out = {"s": {i + 1: Summary(float(v), sd, n) for i, v in enumerate(site)}}
    for name, vals in others.items():
        out[name] = {i + 1: Summary(float(v), sd, n) for i, v in enumerate(vals)}
    return out


def test_below_federation_needs_min_rounds_and_effect_size() -> None:
    others = np.linspace(0.3, 0.8, 8)
    two = {"a": others, "b": others + 0.01}
    few = _curves(others[:4] - 0.2, {k: v[:4] for k, v in two.items()})
    assert not below_federation(few, "s", CFG).flagged  # too few models
    tiny = below_federation(_curves(others - 0.02, two), "s", CFG)  # always below by 0.02
    # rounds collapsed per case: 8 rounds below by 0.02 are not 8 samples (Wilcoxon: p<0.01)
    assert tiny.p > CFG.alpha and not tiny.flagged
    assert tiny.median_gap == pytest.approx(-0.025)
    big = below_federation(_curves(others - 0.2, two), "s", CFG)
    assert big.flagged and big.median_gap == pytest.approx(-0.205)
    assert big.test is not None and big.test.n_cases == 10 and big.test.n_others == 20


def test_false_alarm_rate_on_clean_sites_is_low() -> None:
    """100 clean sites, 20 rounds of noisy but unbiased Dice: almost none flagged."""
    rng = np.random.default_rng(0)
    base = np.array(rising(20))
    flagged = 0
    for _ in range(100):
        site = base + rng.normal(0, 0.03, base.size)
        others = {o: base + rng.normal(0, 0.03, base.size) for o in "abc"}
        curves = _curves(site, others)
        cut = [{s: {m: v for m, v in c.items() if m <= k} for s, c in curves.items()}
               for k in range(5, 21)]  # fmt: skip
        if any(below_federation(c, "s", CFG).flagged for c in cut):
            flagged += 1
    assert flagged <= 2


def test_stalled_site_flagged_when_others_improve() -> None:
    others = np.linspace(0.3, 0.7, 8)
    flat = np.full(8, 0.35) + np.array([0.0, 0.01, -0.01, 0.0, 0.01, -0.005, 0.0, 0.005])
    res = stalled(flat, others, CFG)
    assert res.flagged and res.site_gain < 0.01 and res.others_gain == pytest.approx(0.4)
    assert not stalled(others + 0.01 * np.sin(np.arange(8)), others, CFG).flagged
    # Everybody flat: nothing to compare against.
    assert not stalled(flat, np.full(8, 0.35), CFG).flagged
    assert not stalled(flat[:5], others[:5], CFG).flagged  # shorter than the window


def test_stalled_alarm_in_store(make_run) -> None:
    base = [0.1 + 0.05 * i for i in range(14)]  # the others keep improving
    wiggle = [0.0, 0.01, -0.01, 0.005, 0.0, -0.005, 0.01, 0.0, -0.01, 0.005]
    stuck = base[:4] + [base[3] + d for d in wiggle]
    run = make_run({"a": noisy(base, 0.01, 1), "b": noisy(base, 0.01, 2), "s": stuck})
    with RunStore(run) as store:
        alarms = replay_alarms(store, CFG)
    first = first_flagged(alarms)
    assert {s for s, k in first if k == STALLED} == {"s"}
    # 8 models in the window (1..8) plus one round of persistence: round 10 at the earliest.
    assert 10 <= first[("s", STALLED)] <= 13


def test_outlier_update_is_flagged() -> None:
    z = update_outliers({"a": 1.0, "b": 1.05, "c": 0.97, "d": 3.0}, CFG)
    assert z["d"] > CFG.outlier_z
    assert all(z[s] < CFG.outlier_z for s in "abc")
    # Two near-identical others must not make a slightly larger third an outlier.
    z3 = update_outliers({"a": 1.0, "b": 1.001, "c": 1.2}, CFG)
    assert z3["c"] < CFG.outlier_z
    assert update_outliers({"a": 1.0, "b": 9.0}, CFG) == {}  # too few sites
    # Distances of three clean sites in one round of a real simulated FedAvg run.
    real = update_outliers({"site1": 0.335, "site2": 0.384, "site3": 0.493}, CFG)
    assert max(real.values()) < CFG.outlier_z


def test_outlier_alarm_in_store_only_in_that_round(make_run) -> None:
    base = rising(6)
    dist = {s: [1.0, 1.1, 0.9, 1.0, 1.05] for s in ("a", "b", "c")}
    dist["c"] = [1.0, 1.1, 4.0, 1.0, 1.05]
    run = make_run({s: noisy(base, 0.01, i) for i, s in enumerate("abc")}, update_distance=dist)
    with RunStore(run) as store:
        alarms = replay_alarms(store, CFG)
    assert [(a.round, a.site, a.kind) for a in alarms] == [(3, "c", OUTLIER)]
    assert "robust z=" in alarms[0].message


def test_check_alarms_only_uses_data_up_to_the_round(make_run) -> None:
    base = rising(10)
    run = make_run({"a": base, "b": noisy(base, 0.01, 5), "bad": [v - 0.2 for v in base]})
    with RunStore(run) as store:
        assert check_alarms(store, 4, CFG) == []
        assert [a.kind for a in check_alarms(store, 9, CFG)] == [BELOW]


def test_notification_command_runs_once_per_site_and_kind(make_run, tmp_path: Path) -> None:
    base = rising(10)
    run = make_run({"a": base, "b": noisy(base, 0.01, 5), "bad": [v - 0.2 for v in base]})
    log = tmp_path / "notified.txt"
    script = (
        "import os; open(os.environ['LOG'], 'a').write("
        "os.environ['FEDSEG_ALARM_SITE'] + ' ' + os.environ['FEDSEG_ALARM_KIND'] + ' ' "
        "+ os.environ['FEDSEG_ALARM_ROUND'] + '\\n')"
    )
    cfg = AlarmConfig(notify_command=[sys.executable, "-c", script])
    os.environ["LOG"] = str(log)
    try:
        with RunStore(run) as store:
            for rnd in range(1, 10):
                check_alarms(store, rnd, cfg)
            assert len([a for a in store.alarms() if a.site == "bad"]) == 4  # rounds 6..9
    finally:
        del os.environ["LOG"]
    assert log.read_text().splitlines() == ["bad below_federation 6"]


def test_failing_notification_is_logged_not_raised(make_run) -> None:
    base = rising(8)
    run = make_run({"a": base, "b": base, "bad": [v - 0.2 for v in base]})
    cfg = AlarmConfig(notify_command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    with RunStore(run) as store:
        replay_alarms(store, cfg, notify=True)
        errors = [m for _, level, m in store.events() if level == "error"]
    assert errors and "exited 3" in errors[0]


def test_disabled_config_raises_nothing(make_run) -> None:
    base = rising(8)
    run = make_run({"a": base, "b": base, "bad": [v - 0.3 for v in base]})
    with RunStore(run) as store:
        assert replay_alarms(store, AlarmConfig(enabled=False)) == []


def test_site_tests_report_gap_and_volatility(make_run) -> None:
    base = rising(10)
    jumpy = [v - 0.15 + (0.08 if i % 2 else -0.08) for i, v in enumerate(base)]
    run = make_run({"a": noisy(base, 0.005, 1), "b": noisy(base, 0.005, 2), "j": jumpy})
    with RunStore(run) as store:
        tests = {t.site: t for t in site_tests(store, 9, CFG)}
    assert tests["j"].models == list(range(1, 9))
    assert tests["j"].below.flagged and tests["j"].below.median_gap == pytest.approx(
        -0.15, abs=0.03
    )
    assert tests["j"].volatility > 5 * tests["a"].volatility
    assert volatility(np.array([0.1, 0.2])) != volatility(np.array([0.1, 0.2]))  # NaN: too short
