"""``best.pt`` is always the model ``fedseg select --singlet`` picks, also when sites fail
to validate some rounds (a federation through the in-process transport)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.federation.rounds.coordinator import Coordinator, Exchanged, SiteFailure
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.model_file import load_model
from fedseg.model.summary import Summary
from fedseg.run_folder import BEST_MODEL as BEST
from fedseg.run_folder import BestModel, SiteRoundStatus, model_path
from fedseg.tracking.selection import choose, export_selection
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run

N_VAL = {"site1": 2, "site2": 2, "site3": 6}
#: Validation Dice of model r at each site; None: the site fails the round that validates it.
DICE: dict[int, dict[str, float | None]] = {
    0: {"site1": 0.9, "site2": 0.9, "site3": None},  # best if site3's absence were ignored
    1: {"site1": 0.9, "site2": 0.9, "site3": 0.6},  # 0.72 by cases (0.80 unweighted)
    2: {"site1": 0.95, "site2": None, "site3": 0.95},  # best if site2's absence were ignored
    3: {"site1": 0.8, "site2": 0.8, "site3": 0.7},  # 0.74 by cases (0.77 unweighted): best
    4: {"site1": 0.55, "site2": 0.55, "site3": 0.7},  # 0.64
}


class ScriptedTransport(ArrayTransport):
    """``ArrayTransport`` whose sites validate model r with ``DICE[r]`` and fail the round
    where that is None; before each exchange it notes the run's ``best`` meta."""

    def __init__(self, run: Path) -> None:
        super().__init__(dict.fromkeys(SITES, 0.01), dict.fromkeys(SITES, 3), n_val=N_VAL)
        self.run = run
        self.best_seen: list[int | None] = []

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
    ) -> None:
        with RunStore(self.run) as store:
            best = store.meta.best()
        self.best_seen.append(best.model_round if best else None)
        mr = next(iter(requests.values())).model_round
        self.fail = {
            s: SiteFailure(SiteRoundStatus.FAILED, "RuntimeError: validation crashed")
            for s, d in DICE[mr].items()
            if d is None
        }

        def script(site: str, ex: Exchanged) -> None:
            if isinstance(ex.result, TaskReply):
                d = DICE[mr][site]
                assert d is not None
                ex.result.validation = {
                    g: {"dice": Summary(d, 0.1, N_VAL[site])} for g in ("ET", "TC", "WT", "mean")
                }
            on_result(site, ex)

        super().exchange(requests, timeout_s, script)


def test_best_model_equals_the_singlet_selection(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "run",
        tiny_plan({s: tmp_path / s for s in SITES}, rounds=4, min_sites=1),
    )
    transport = ScriptedTransport(run)
    Coordinator(run, transport).run()
    # before round 1: nothing; after it: model 0 (site3 had not validated yet); after
    # round 2: site3's first validation makes model 0 ineligible -> model 1; model 2 lacks
    # site2 -> stays model 1; after round 4: model 3.
    assert transport.best_seen == [None, 0, 1, 1, 3]
    with RunStore(run) as store:
        best = store.meta.best()
        single = choose(store, "singlet")
        sel = export_selection(run, store, "singlet", tmp_path / "singlet")
    assert best is not None
    assert best.model_round == single["ET"][0] == sel.regions["ET"].model_round == 3
    assert best.score == pytest.approx(single["ET"][1]) == pytest.approx(0.74)
    assert best.n_val == sum(N_VAL.values())
    got = load_model(run / BEST).weights
    for ref in (load_model(tmp_path / "singlet" / sel.files[0]).weights,
                load_model(model_path(run, 3)).weights):  # fmt: skip
        assert got.keys() == ref.keys()
        for k in got:
            np.testing.assert_array_equal(got[k], ref[k])


def test_best_model_goes_when_no_round_is_a_candidate(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", tiny_plan({s: tmp_path / s for s in SITES}, rounds=1))
    with RunStore(run) as store:
        store.record_checkpoint(0, model_path(run, 0))
        store.record_validation(0, "site1", {"mean": {"dice": Summary(0.5, 0.1, 2)}})
        store.record_validation(1, "site2", {"mean": {"dice": Summary(0.6, 0.1, 2)}})
        store.meta.set_best(BestModel(model_round=0, score=0.5, n_val=2, time=0.0))
    (run / BEST).write_bytes(b"stale")
    c = Coordinator(run, ArrayTransport({}, {}))
    c._update_best()  # site1 and site2 never validated the same model: no candidate
    assert not (run / BEST).exists() and c.store.meta.best() is None
    c.store.close()
