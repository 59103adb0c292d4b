"""The run store: where it is opened, and its privacy ledger (``privacy_ledger`` table)."""

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
