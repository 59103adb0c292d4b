"""The run store's privacy ledger (``privacy_ledger`` table)."""

from __future__ import annotations

from pathlib import Path

from fedseg.run_folder import PrivacySpent
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
