"""A federation stops on ``train.plateau``: the round loop checks the validated model
rounds before each round, records the stop, validates its last model, and reads as done."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from fedseg.federation.rounds.coordinator import Coordinator
from fedseg.run_folder import PlateauStop, RunStatus
from fedseg.tracking.status import RunState, read_status, render_status
from fedseg.tracking.store import RunStore
from fedseg.train.plateau import PlateauConfig
from tests.federation.fed_helpers import SITES, ArrayTransport, tiny_plan, write_run


def test_a_flat_curve_stops_the_run_early_and_a_resume_trains_no_more(tmp_path: Path) -> None:
    sites = {s: tmp_path / s for s in SITES}
    base = tiny_plan(sites, rounds=10)
    train = base.train.model_copy(update={"plateau": PlateauConfig(rounds=2)})
    run = write_run(tmp_path / "run", base.model_copy(update={"train": train}))
    # every model validates at 0.5 + offset: model 0 stays the best; models 1 and 2 add
    # nothing, and their scores are known once round 3 has trained
    t = ArrayTransport({"site1": 0.1, "site2": 0.2, "site3": 0.4},
                       {"site1": 1, "site2": 2, "site3": 5})  # fmt: skip
    Coordinator(run, t).run()
    with RunStore(run) as store:
        assert [r["round"] for r in store.rounds()] == [1, 2, 3]
        assert store.meta.plateau() == PlateauStop(last_round=3, best_round=0, cap=10)
        assert store.meta.status() == RunStatus.DONE and store.meta.final_validated()
        assert any("stopped after round 3 of 10" in m for _t, _lv, m in store.events())
        validated = {r.model_round for r in store.validation(metric="dice", region="ET")}
    assert validated == {0, 1, 2, 3}  # the last model too (the final validation)
    assert [r["site1"].epochs for r in t.requests] == [1, 1, 1, 0]
    view = read_status(run)
    assert view.state == RunState.DONE  # not "stopped": 3 of 3 rounds
    console = Console(width=80, record=True, color_system=None)
    console.print(render_status(view))
    shown = " ".join(console.export_text().split())
    assert "rounds done 3/3" in shown and "stopped early: no gain since model 0" in shown
    again = ArrayTransport(t.offsets, t.n_train)
    Coordinator(run, again).run()  # a resume reaches the same stop from the store
    assert again.requests == []
    with RunStore(run) as store:
        assert [r["round"] for r in store.rounds()] == [1, 2, 3]
