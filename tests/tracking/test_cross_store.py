"""The run store's cross-site table and alarm evidence, and the collapsed cross matrix."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from fedseg.model.summary import Summary
from fedseg.run_folder import AlarmEvidence, AlarmKind, AlarmLevel, cross_label, parse_cross_label
from fedseg.tracking.cross_matrix import cross_cells, cross_matrix
from fedseg.tracking.status import ReadOnlyRunStore
from fedseg.tracking.store import CROSS_DICE_DIFF, Alarm, CrossRow, RunStore


def _row(rnd: int, model: str, evaluator: str, mean: float, sd: float = 0.1, n: int = 3):
    """Away: round r validates model r-1 against global r-1; home: model r against r-1."""
    return CrossRow(rnd, model, rnd - 1 if model != evaluator else rnd, evaluator, rnd - 1,
                    "mean", CROSS_DICE_DIFF, Summary(mean, sd, n))  # fmt: skip


def test_cross_rows_round_trip_and_collapse_rounds_per_case(tmp_path):
    with RunStore(tmp_path) as store:
        store.record_cross([_row(2, "a", "b", -0.2, 0.1), _row(3, "a", "b", -0.4, 0.3),
                            _row(2, "b", "a", 0.05), _row(2, "a", "a", 0.3, n=4)])  # fmt: skip
        rows = store.cross()
        assert len(rows) == 4 and rows[0].summary == Summary(-0.2, 0.1, 3)
        assert [r.home for r in rows].count(True) == 1
        assert store.cross(upto_round=2) == [r for r in rows if r.round <= 2]
        store.discard_after(2)
        assert all(r.round <= 2 for r in store.cross())
        store.record_cross([_row(3, "a", "b", -0.4, 0.3)])
        cells = {(c.model_site, c.eval_site): c for c in cross_cells(store.cross())}
    ab = cells[("a", "b")]
    # two rounds of the same 3 cases: mean of means, sd bound = mean of sds, n stays 3
    assert np.isclose(ab.mean, -0.3) and np.isclose(ab.sd, 0.2) and ab.n == 3
    assert ab.rounds == (1, 2) and cells[("a", "a")].home
    models, evaluators, m = cross_matrix(list(cells.values()))
    assert models == ["a", "b"] and evaluators == ["a", "b"]
    assert np.isclose(m[0, 1], -0.3) and np.isnan(m[1, 1])


def test_alarm_level_and_evidence_round_trip_and_old_store_reads(tmp_path):
    ev = AlarmEvidence(kind=AlarmKind.LABELS_DISAGREE, region="TC", statistic="z", value=-6.1,
                       p=1e-5, effect=-0.31, margin=0.1, n_cases=12, evaluators=["b", "c"],
                       model_rounds=[2, 3, 4], text="local models lose 0.31")  # fmt: skip
    with RunStore(tmp_path) as store:
        assert store.record_alarm(Alarm(4, "a", AlarmKind.LABELS_DISAGREE, "m", evidence=ev))
        assert store.record_alarm(
            Alarm(4, "b", AlarmKind.BELOW_FEDERATION, "lower", AlarmLevel.OBSERVATION)
        )
        assert [a.site for a in store.alarms()] == ["a"]
        both = store.alarms(observations=True)
    assert both[0].evidence == ev and both[1].level == AlarmLevel.OBSERVATION
    # a store written before levels, evidence and cross-site rows existed
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / "run.sqlite")
    db.executescript(
        "CREATE TABLE rounds (round INTEGER PRIMARY KEY, status TEXT, started REAL,"
        " finished REAL, wall_s REAL, n_sites INTEGER, note TEXT);"
        "CREATE TABLE alarms (id INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER, site TEXT,"
        " kind TEXT, message TEXT, created REAL, UNIQUE (round, site, kind));"
        "INSERT INTO alarms (round, site, kind, message, created)"
        " VALUES (5, 's', 'below_federation', 'old', 0);"
    )
    db.commit()
    db.close()
    ro = ReadOnlyRunStore(old)
    assert ro.alarms() == [Alarm(5, "s", "below_federation", "old")] and ro.cross() == []
    ro.close()
    with RunStore(old) as store:  # a writer adds the columns and keeps the row
        assert store.alarms()[0].level == AlarmLevel.ALARM


def test_cross_label_round_trip():
    assert parse_cross_label(cross_label("site-1.a", 7)) == ("site-1.a", 7, False)
    assert parse_cross_label(cross_label("site-1.a", 7, without=True)) == ("site-1.a", 7, True)
    for bad in ("site", "@3", "s@x"):
        with pytest.raises(ValueError):
            parse_cross_label(bad)
