"""The run store: where it is opened, its privacy ledger (``privacy_ledger`` table), and a
store written before a site-round status existed."""

from __future__ import annotations

from pathlib import Path

from fedseg.run_folder import STORE_FILE, PrivacySpent
from fedseg.tracking.store import RunStore


def test_privacy_ledger_rows_round_trip_and_go_with_discarded_rounds(tmp_path: Path) -> None:
    spent = PrivacySpent(level="case", epsilon=0.5, delta=1e-5, sigma=1.1, clip_norm=1.0,
                         steps=10, sample_rate=0.1, accountant="rdp")  # fmt: skip
    with RunStore(tmp_path) as store:
        store.record_privacy(1, "a", spent)
        store.record_privacy(2, "a", spent.model_copy(update={"epsilon": 0.9, "steps": 20}))
        store.record_privacy(2, "*", spent.model_copy(update={"level": "site"}))
        assert [(r, s, p.epsilon) for r, s, p in store.privacy_ledger()] == [
            (1, "a", 0.5), (2, "*", 0.5), (2, "a", 0.9)
        ]  # fmt: skip
        assert [r for r, _, _ in store.privacy_ledger("a")] == [1, 2]
        store.discard_after(1)
        assert [(r, s) for r, s, _ in store.privacy_ledger()] == [(1, "a")]


def test_a_run_folder_not_made_yet_is_made_as_a_folder(tmp_path: Path) -> None:
    """A reader polling a run before it starts must not leave a file where the folder goes."""
    run = tmp_path / "run"
    with RunStore(run) as store:
        store.meta.set_round_bytes(1)
    assert run.is_dir() and (run / STORE_FILE).is_file()
    with RunStore(run / STORE_FILE) as store:  # the store file itself opens the same store
        assert store.path == run / STORE_FILE


def test_a_store_from_before_not_asked_takes_the_new_status(tmp_path: Path) -> None:
    """A run started before ``not asked`` existed (its ``site_rounds`` check lists the old
    statuses) resumes with it: the table is rebuilt once, its rows kept."""
    import sqlite3

    from fedseg.run_folder import SiteRoundStatus
    from fedseg.tracking.store import SiteRound

    path = tmp_path / STORE_FILE
    old = sqlite3.connect(path)
    cols = ("round INTEGER NOT NULL, site TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN "
            "('ok', 'failed', 'timeout', 'rejected')), n_train INTEGER, n_val INTEGER, "
            "train_loss REAL, wall_s REAL, bytes_sent INTEGER, bytes_received INTEGER, "
            "update_norm REAL, update_distance REAL, error TEXT, extra TEXT, "
            "PRIMARY KEY (round, site)")  # fmt: skip
    old.execute(f"CREATE TABLE site_rounds ({cols})")
    old.execute("INSERT INTO site_rounds (round, site, status, n_train) VALUES (1, 'a', 'ok', 3)")
    old.commit()
    try:
        old.execute("INSERT INTO site_rounds (round, site, status) VALUES (2, 'a', 'not asked')")
        raise AssertionError("the old check accepted a new status")
    except sqlite3.IntegrityError:
        pass
    old.close()
    with RunStore(tmp_path) as store:
        store.record_site_round(SiteRound(2, "a", SiteRoundStatus.NOT_ASKED))
        rows = store.site_rounds()
    assert [(r.round, r.status, r.n_train) for r in rows] == [(1, "ok", 3), (2, "not asked", None)]
    with RunStore(tmp_path) as store:  # opened again: nothing to rebuild, rows kept
        assert len(store.site_rounds()) == 2
