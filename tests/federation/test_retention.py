"""Model retention (plan ``retention``): which round models stay, a real round loop that
prunes, a resume after pruning, and ``best.pt == select --singlet`` when the best would be
a deleted round."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from fedseg.data.cases import discover_cases
from fedseg.errors import FedsegError
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged
from fedseg.federation.rounds.retention import kept_rounds
from fedseg.model.model_file import load_model, weights_hash
from fedseg.model.summary import Summary
from fedseg.plan import PlanConfig, RetentionConfig, example_plan
from fedseg.run_folder import BEST_MODEL, MODELS_DIR, model_path
from fedseg.tracking.report import build_report
from fedseg.tracking.selection import best_round, choose, deleted_model_rounds, export_selection
from fedseg.tracking.status import read_status, render_status
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, DyingTransport, tiny_plan, write_run
from tests.helpers import run_fedseg

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


@pytest.mark.parametrize(
    ("n", "last", "best", "keep_last", "keep_every", "kept"),
    [
        # default policy (last 1, every 25th): a 500-round run keeps 21 + last + best
        (101, 100, {37}, 1, 25, {0, 25, 37, 50, 75, 100}),
        (100, 99, {37}, 1, 25, {0, 25, 37, 50, 75, 99}),
        (501, 500, {0}, 1, 25, set(range(0, 501, 25))),
        # keep_last N: the last N rounds by number
        (8, 7, {0}, 2, 3, {0, 3, 6, 7}),
        (8, 7, {5}, 3, 100, {0, 5, 6, 7}),
        # several best rounds (singlet and triplet picks)
        (10, 9, {2, 4, 5}, 1, 100, {0, 2, 4, 5, 9}),
        # no best yet; keep_every 1: everything
        (4, 3, set(), 1, 2, {0, 2, 3}),
        (6, 5, set(), 1, 1, set(range(6))),
        # null: keep all
        (50, 49, {3}, 1, None, set(range(50))),
        # rounds after `last` (a round being written) are never deleted
        (5, 3, set(), 1, 10, {0, 3, 4}),
    ],
)
def test_kept_rounds_table(
    n: int, last: int, best: set[int], keep_last: int, keep_every: int | None, kept: set[int]
) -> None:
    policy = RetentionConfig(keep_last=keep_last, keep_every=keep_every)
    assert kept_rounds(range(n), last, best, policy) == kept


def test_policy_defaults_and_checks() -> None:
    assert RetentionConfig() == RetentionConfig(keep_last=1, keep_every=25)
    for bad in ({"keep_last": 0}, {"keep_every": 0}, {"keep": 3}):
        with pytest.raises(ValueError):
            RetentionConfig.model_validate(bad)
    # the example plan spells the defaults out
    import yaml

    plan = yaml.safe_load(example_plan())
    assert plan["retention"] == RetentionConfig().model_dump()
    assert PlanConfig.model_validate(plan).retention == RetentionConfig()


def _plan(tmp_path: Path, **overrides: object) -> PlanConfig:
    base: dict[str, object] = {
        "rounds": 7,
        "retention": {"keep_last": 2, "keep_every": 3},
        "strategy": {"name": "fedadam", "params": {"server_lr": 0.05}},
    }
    return tiny_plan({s: tmp_path / s for s in SITES}, **{**base, **overrides})


def _model_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / MODELS_DIR).iterdir())


#: rounds 0-7, keep_last 2, keep_every 3, best 0 (constant Dice): models 0, 3, 6, 7 stay,
#: the strategy state (resume state) only for the last 2 rounds.
EXPECTED = [
    "round_0000.pt", "round_0003.pt", "round_0006.pt", "round_0006.strategy.npz",
    "round_0007.pt", "round_0007.strategy.npz",
]  # fmt: skip


def test_a_run_keeps_exactly_the_policy_files(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path))
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    assert _model_files(run) == EXPECTED
    with RunStore(run) as store:
        assert sorted(store.checkpoints()) == [0, 3, 6, 7]
        assert deleted_model_rounds(store) == [1, 2, 4, 5]
        lines = [m for _, _, m in store.events() if m.startswith("retention")]
        best = store.meta.best()
        single = choose(store, "singlet")
    # one line per round that deleted something: rounds 3, 4, 6, 7 deleted 1, 2, 4, 5
    assert lines == [
        f"retention (best, keep_last 2, keep_every 3): deleted the model of round(s) {r}"
        for r in (1, 2, 4, 5)
    ]
    assert best is not None and best.model_round == single["ET"][0] == 0
    # status says which models are on disk
    view = read_status(run)
    assert view.models_kept == [0, 3, 6, 7] and view.models_deleted == [1, 2, 4, 5]
    from rich.console import Console

    con = Console(record=True, width=200)
    con.print(render_status(view))
    assert (
        "models on disk: rounds 0, 3, 6, 7 (4 deleted by the plan's retention" in con.export_text()
    )
    # the report's selection says the picks are among the kept rounds
    assert "retention deleted the models of 4 validated round(s)" in build_report(run)
    # a deleted round's model file: a one-line hint, not a traceback
    with pytest.raises(FedsegError, match=r"round_0004.pt: model file not found; .*retention"):
        load_model(model_path(run, 4))


def test_resume_after_pruning_equals_a_straight_run(tmp_path: Path) -> None:
    straight = write_run(tmp_path / "a", _plan(tmp_path))
    Coordinator(straight, ArrayTransport(OFFSETS, N_TRAIN)).run()
    run = write_run(tmp_path / "b", _plan(tmp_path))
    with pytest.raises(RuntimeError, match="killed"):
        Coordinator(run, DyingTransport(6, OFFSETS, N_TRAIN)).run()
    # killed in round 6: round 5 is the last done; rounds 1, 2 are gone already, 4 is
    # still among the last 2; the server optimizer's state of round 5 is there to resume
    assert _model_files(run) == [
        "round_0000.pt", "round_0003.pt", "round_0004.pt", "round_0004.strategy.npz",
        "round_0005.pt", "round_0005.strategy.npz",
    ]  # fmt: skip
    t = ArrayTransport(OFFSETS, N_TRAIN)
    Coordinator(run, t).run()
    assert [next(iter(r.values())).round for r in t.requests] == [6, 7, 8]
    assert _model_files(run) == EXPECTED
    for r in (3, 7):
        assert weights_hash(load_model(model_path(run, r)).weights) == weights_hash(
            load_model(model_path(straight, r)).weights
        )


def test_keep_last_one_resumes_with_its_single_model(tmp_path: Path) -> None:
    plan = _plan(tmp_path, rounds=4, retention={"keep_last": 1, "keep_every": 100})
    run = write_run(tmp_path / "run", plan)
    with pytest.raises(RuntimeError, match="killed"):
        Coordinator(run, DyingTransport(4, OFFSETS, N_TRAIN)).run()
    assert _model_files(run) == ["round_0000.pt", "round_0003.pt", "round_0003.strategy.npz"]
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    assert _model_files(run) == ["round_0000.pt", "round_0004.pt", "round_0004.strategy.npz"]


class ScoredTransport(ArrayTransport):
    """Sites validate model r with Dice ``DICE[r]`` (every region, every site)."""

    DICE: ClassVar[dict[int, float]] = {0: 0.5, 1: 0.6, 2: 0.9, 3: 0.7, 4: 0.8, 5: 0.65}

    def exchange(self, requests, timeout_s, on_result):  # type: ignore[no-untyped-def]
        mr = next(iter(requests.values())).model_round

        def scored(site: str, ex: Exchanged) -> None:
            ex.result.validation = {  # type: ignore[union-attr]
                g: {"dice": Summary(self.DICE[mr], 0.1, 2)} for g in ("ET", "TC", "WT", "mean")
            }
            on_result(site, ex)

        super().exchange(requests, timeout_s, scored)


def test_best_is_the_best_kept_round_and_select_agrees(tmp_path: Path) -> None:
    """Retention keeps the round ``select`` picks; when a deleted round would be the best
    (here: the validation rows of the best round are rewritten, as a redone validation
    would), ``best.pt`` and ``select --singlet`` both take the best kept round."""
    plan = _plan(tmp_path, rounds=5, retention={"keep_last": 1, "keep_every": 100},
                 strategy={"name": "fedavg"})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    Coordinator(run, ScoredTransport(OFFSETS, N_TRAIN)).run()
    # model 2 is the best (0.9): kept, with 0 (every 100th) and 5 (last)
    assert _model_files(run) == ["round_0000.pt", "round_0002.pt", "round_0005.pt"]
    with RunStore(run) as store:
        assert store.meta.best().model_round == 2  # type: ignore[union-attr]
        for site in SITES:  # model 2 re-validated lower: model 4 (0.8) would now be the best
            store.record_validation(2, site, {g: {"dice": Summary(0.55, 0.1, 2)}
                                              for g in ("ET", "TC", "WT", "mean")})  # fmt: skip
        assert best_round(store, require_checkpoint=False)[0] == 4  # type: ignore[index]
        assert best_round(store)[0] == 5  # type: ignore[index]
    c = Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN))
    c._update_best()
    c._prune(5)  # model 2 is no longer a pick: deleted
    c.store.close()
    assert _model_files(run) == ["round_0000.pt", "round_0005.pt"]
    out = tmp_path / "singlet"
    res = run_fedseg("select", str(run), "--singlet", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "chosen among the rounds whose model is kept" in res.stdout + res.stderr
    with RunStore(run) as store:
        assert store.meta.best().model_round == 5  # type: ignore[union-attr]
        sel = export_selection(run, store, "triplet", tmp_path / "triplet")
    assert {c.model_round for c in sel.regions.values()} == {5}
    got = load_model(run / BEST_MODEL).weights
    ref = load_model(out / "model_round0005.pt").weights
    for k in got:
        np.testing.assert_array_equal(got[k], ref[k])


def test_retention_does_not_change_what_select_picks(tmp_path: Path) -> None:
    """The rounds ``select`` picks with every model kept are kept by the default policy."""
    picks = {}
    for name, retention in (("all", {"keep_every": None}), ("pruned", {})):
        plan = _plan(tmp_path, rounds=5, retention=retention, strategy={"name": "fedavg"})
        run = write_run(tmp_path / name, plan)
        Coordinator(run, ScoredTransport(OFFSETS, N_TRAIN)).run()
        with RunStore(run) as store:
            picks[name] = (choose(store, "singlet"), choose(store, "triplet"))
        if name == "pruned":
            assert _model_files(run) == ["round_0000.pt", "round_0002.pt", "round_0005.pt"]
    assert picks["all"] == picks["pruned"]


def test_commands_on_a_pruned_run_read_it_or_say_what_is_gone(
    tmp_path: Path, tiny_sites: dict[str, Path]
) -> None:
    run = write_run(tmp_path / "run", _plan(tmp_path))
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN)).run()
    for args in (
        ("status", run),
        ("report", run, "--out", tmp_path / "report.html"),
        ("contributions", run),
        ("alarms", run, "--replay"),
        ("select", run, "--triplet", "--out", tmp_path / "triplet"),
    ):
        res = run_fedseg(*args)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (args, res.stderr)
    case = discover_cases(tiny_sites["site1"])[0].folder  # not the site's .fedseg folder
    res = run_fedseg("segment", "-m", model_path(run, 4), case, "-o", tmp_path / "seg.nii.gz")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "round_0004.pt: model file not found" in res.stderr and "retention" in res.stderr
