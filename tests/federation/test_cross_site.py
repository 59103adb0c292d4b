"""Cross-site validation: the assignment, when it runs, and the coordinator's side (parking,
requests, stored rows, clean-up, restart, lying replies) with hand-made site answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.errors import PlanError
from fedseg.federation.rounds import cross_site
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.summary import Summary
from fedseg.plan import CrossSiteConfig
from fedseg.run_folder import CROSSVAL_DIR, DeclaredCases, crossval_dir, parse_cross_label
from fedseg.tracking.store import CROSS_DICE, CROSS_DICE_DIFF, WITHOUT_DICE_DIFF, RunStore
from tests.federation.fed_helpers import SITES, ArrayTransport, Dies, tiny_plan, write_run

OFFSETS = {"site1": 0.1, "site2": 0.2, "site3": 0.4}
#: plan ``cross_site`` with the models without each site (off by default)
LOO = {"leave_one_out": True}
N_TRAIN = {"site1": 1, "site2": 2, "site3": 5}


# -- the assignment --------------------------------------------------------------------
def test_assignment_is_balanced_deterministic_and_never_self() -> None:
    sites = [f"s{i:02d}" for i in range(12)]
    for rnd in range(1, 6):
        a = cross_site.assign(sites, sites, 3, seed=7, model_round=rnd)
        assert a == cross_site.assign(list(reversed(sites)), sites, 3, seed=7, model_round=rnd)
        assert all(len(ms) == 3 for ms in a.values()) and set(a) == set(sites)
        per_model = Counter(m for ms in a.values() for m in ms)
        assert set(per_model.values()) == {3}
        assert all(e not in ms for e, ms in a.items())
    assert cross_site.assign(sites, sites, 3, 7, 1) != cross_site.assign(sites, sites, 3, 7, 2)
    assert cross_site.assign(sites, sites, 3, 7, 1) != cross_site.assign(sites, sites, 3, 8, 1)
    # over the rounds every ordered pair occurs
    pairs = {(m, e) for r in range(1, 60)
             for e, ms in cross_site.assign(sites, sites, 3, 7, r).items() for m in ms}  # fmt: skip
    assert len(pairs) == 12 * 11
    # fewer evaluators than asked: all of the others
    a = cross_site.assign(["a", "b", "c"], ["a", "b", "c"], 3, 0, 1)
    assert {m: sorted(e for e, ms in a.items() if m in ms) for m in "abc"} == {
        "a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}  # fmt: skip


def test_a_small_site_is_evaluated_but_never_evaluates() -> None:
    declared = {s: DeclaredCases(n_train=5, n_val=n) for s, n in
                {"a": 3, "b": 4, "c": 2, "d": 3, "e": 1}.items()}  # fmt: skip
    evals = cross_site.evaluators(declared, ["a", "b", "c", "d", "e", "f"], floor=3)
    assert evals == ["a", "b", "d"]  # c, e: too few cases; f: declared nothing
    for rnd in range(1, 20):
        a = cross_site.assign(list("abcde"), evals, 2, 3, rnd)
        assert set(a) <= set(evals)
        got = Counter(m for ms in a.values() for m in ms)
        assert got == dict.fromkeys("abcde", 2)
        loads = [len(ms) for ms in a.values()]
        assert max(loads) - min(loads) <= 2  # two non-evaluators in the ring


def test_models_per_round_is_round_robin_and_every_skips_rounds() -> None:
    order = ["a", "b", "c", "d", "e"]
    cfg = CrossSiteConfig(models_per_round=2)
    kept = [cross_site.kept_models(cfg, r, order, order) for r in range(1, 6)]
    assert kept == [["a", "b"], ["c", "d"], ["a", "e"], ["b", "c"], ["d", "e"]]
    assert cross_site.kept_models(cfg, 1, ["b", "e"], order) == ["b", "e"]
    assert cross_site.kept_models(cfg, 2, ["a", "c", "e"], order) == ["c", "e"]
    every = CrossSiteConfig(every=3)
    assert [r for r in range(1, 11) if cross_site.is_cross_round(every, r)] == [1, 4, 7, 10]


# -- when it runs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("privacy", "key"),
    [
        ({"secure_aggregation": True}, "privacy.secure_aggregation"),
        ({"he": "ckks"}, "privacy.he"),
        ({"dp": {"level": "site", "epsilon": 8}}, "privacy.dp level site"),
    ],
)
def test_refused_under_hidden_updates_and_off_by_default(
    tmp_path: Path, privacy: dict[str, object], key: str
) -> None:
    sites = {s: tmp_path / s for s in SITES}
    plan = tiny_plan(sites, privacy={"min_summary_cases": 1, **privacy})
    assert cross_site.resolve(plan) is None  # null: off, with the reason
    assert key in (cross_site.off_reason(plan) or "")
    on = plan.model_copy(update={"cross_site": CrossSiteConfig(enabled=True)})
    with pytest.raises(PlanError, match=f"cross_site.enabled true: .*{key}.*null or false"):
        cross_site.check_cross_site(on)
    from fedseg.federation.commands.run_folder import check_plan_runs

    with pytest.raises(PlanError, match=r"cross_site\.enabled"):
        check_plan_runs(on, tmp_path / "run")


def test_on_by_default_off_when_asked_and_for_case_dp_allowed(tmp_path: Path) -> None:
    sites = {s: tmp_path / s for s in SITES}
    assert cross_site.resolve(tiny_plan(sites)) == CrossSiteConfig()
    off = tiny_plan(sites, cross_site={"enabled": False})
    assert cross_site.resolve(off) is None and "false" in (cross_site.off_reason(off) or "")
    case_dp = tiny_plan(sites, privacy={"min_summary_cases": 1,
                                        "dp": {"level": "case", "epsilon": 8}})  # fmt: skip
    assert cross_site.resolve(case_dp) is not None  # each local model is DP already
    assert cross_site.resolve(tiny_plan(sites), sequential=True) is None


# -- the coordinator's side with hand-made answers ----------------------------------------
def _answer(value: float, n: int) -> dict[str, dict[str, Summary]]:
    return {r: {CROSS_DICE: Summary(0.5, 0.1, n), CROSS_DICE_DIFF: Summary(value, 0.05, n)}
            for r in ("ET", "TC", "WT", "mean")}  # fmt: skip


class CrossArrayTransport(ArrayTransport):
    """``ArrayTransport`` whose sites answer the cross-site models they are sent (dice_diff
    -0.1 each) and their home check (+0.2); ``lie(site, reply)`` may change a reply. It
    sees the crossval folder of ``run`` at each exchange (``parked``)."""

    def __init__(self, run: Path, lie: Callable[[str, TaskReply], None] | None = None) -> None:
        super().__init__(OFFSETS, N_TRAIN)
        self.run, self.lie = run, lie
        self.parked: list[list[str]] = []
        #: each cross-site model label -> its arrays as sent
        self.seen: dict[str, dict[str, np.ndarray]] = {}

    def exchange(
        self, requests: dict[str, TaskRequest], timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
    ) -> None:  # fmt: skip
        root = self.run / CROSSVAL_DIR
        self.parked.append(sorted(p.name for p in root.iterdir()) if root.is_dir() else [])
        for req in requests.values():  # the parked files go once the round is done
            for label, arrays in req.cross.items():
                self.seen.setdefault(label, {k: np.array(v) for k, v in arrays.items()})

        def answer(site: str, ex: Exchanged) -> None:
            rep, req = ex.result, requests[site]
            assert isinstance(rep, TaskReply)
            rep.cross = {label: _answer(-0.1, 2) for label in req.cross}
            rep.home = _answer(0.2, 2) if req.home else {}
            if self.lie is not None:
                self.lie(site, rep)
            on_result(site, ex)

        super().exchange(requests, timeout_s, answer)


class DyingCrossTransport(Dies, CrossArrayTransport):
    def __init__(self, dies_in: int, run: Path) -> None:
        super().__init__(run)
        self.dies_in = dies_in


def test_models_travel_once_and_rows_land_and_parked_models_go(tmp_path: Path) -> None:
    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=3, cross_site=LOO)
    run = write_run(tmp_path / "run", plan)
    t = CrossArrayTransport(run)
    Coordinator(run, t).run()
    first, second, final = t.requests[0], t.requests[1], t.requests[3]
    assert all(not r.cross and r.home for r in first.values())  # nothing parked before round 1
    # round 2: each model of round 1 at the two other sites, the same object everywhere
    labels = Counter(label for r in second.values() for label in r.cross)
    locals_, withouts = {"site1@1": 2, "site2@1": 2, "site3@1": 2}, {"~site1@1": 2, "~site2@1": 2,
                                                                    "~site3@1": 2}  # fmt: skip
    assert labels == {**locals_, **withouts}
    objs = {label: {id(r.cross[label]) for r in second.values() if label in r.cross}
            for label in labels}  # fmt: skip
    assert all(len(ids) == 1 for ids in objs.values())
    assert all(parse_cross_label(label)[0] != s for s, r in second.items() for label in r.cross)
    # each local model travels with the round's model without it, to the same sites
    for r in second.values():
        assert {parse_cross_label(x).site for x in r.cross if parse_cross_label(x).without} == {
            parse_cross_label(x).site for x in r.cross if not parse_cross_label(x).without
        }
    # the model without site i is FedAvg's mean of the others (global + their offsets)
    g0 = t.requests[0]["site1"].weights
    for site in SITES:
        rest = [s for s in SITES if s != site]
        expect = sum(N_TRAIN[s] * OFFSETS[s] for s in rest) / sum(N_TRAIN[s] for s in rest)
        for k, arr in g0.items():
            np.testing.assert_allclose(t.seen[f"~{site}@1"][k], arr + expect, atol=1e-6)
            np.testing.assert_allclose(t.seen[f"{site}@1"][k], arr + OFFSETS[site], atol=1e-6)
    assert {label for r in final.values() for label in r.cross} == {
        "site1@3", "site2@3", "site3@3", "~site1@3", "~site2@3", "~site3@3"}  # fmt: skip
    assert not any(r.home for r in final.values())
    # each round saw only the previous round's parked models; none is left
    assert t.parked == [[], ["round_0001"], ["round_0002"], ["round_0003"]]
    assert not (run / CROSSVAL_DIR).exists()
    with RunStore(run) as store:
        rows = store.cross()
    home = [r for r in rows if r.home]
    away = [r for r in rows if not r.home]
    assert {(r.round, r.model_round, r.reference_round) for r in home} == {
        (1, 1, 0), (2, 2, 1), (3, 3, 2)}  # fmt: skip
    assert {(r.round, r.model_round, r.reference_round) for r in away} == {
        (2, 1, 1), (3, 2, 2), (4, 3, 3)}  # fmt: skip
    # rounds x models x evaluators x regions x metrics x (local model, model without it)
    assert len(away) == 3 * 3 * 2 * 4 * 2 * 2
    assert all(r.summary.mean == -0.1 for r in away if r.metric == CROSS_DICE_DIFF)
    assert Counter(r.metric for r in away) == {
        m: 3 * 3 * 2 * 4 for m in (CROSS_DICE, CROSS_DICE_DIFF, "without_dice", WITHOUT_DICE_DIFF)
    }


def test_restart_uses_the_resumed_rounds_parked_models_and_drops_stale_ones(
    tmp_path: Path,
) -> None:
    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=3, cross_site=LOO)
    run = write_run(tmp_path / "run", plan)
    with pytest.raises(RuntimeError):
        Coordinator(run, DyingCrossTransport(3, run)).run()
    assert (crossval_dir(run, 2)).is_dir() and not crossval_dir(run, 1).exists()
    stale = crossval_dir(run, 7)
    stale.mkdir(parents=True)
    (stale / "site1.npz").write_bytes(b"x")
    t = CrossArrayTransport(run)
    Coordinator(run, t).run()
    assert not stale.exists() and not (run / CROSSVAL_DIR).exists()
    assert {label for r in t.requests[0].values() for label in r.cross} == {
        "site1@2", "site2@2", "site3@2", "~site1@2", "~site2@2", "~site3@2"}  # fmt: skip
    with RunStore(run) as store:
        rounds = Counter(r.round for r in store.cross() if not r.home)
        events = " ".join(m for _, _, m in store.events())
    assert rounds == {2: 96, 3: 96, 4: 96}  # local models and the models without them
    assert "removed the stale round_0007" in events


def test_a_parked_model_torn_by_a_crash_is_dropped_on_restart(tmp_path: Path) -> None:
    """Parked models are written without an fsync: after a machine crash one may be torn.
    The restart drops it with one warning and validates the others."""
    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=3, cross_site=LOO)
    run = write_run(tmp_path / "run", plan)
    with pytest.raises(RuntimeError):
        Coordinator(run, DyingCrossTransport(3, run)).run()
    torn = crossval_dir(run, 2) / "site2.npz"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    t = CrossArrayTransport(run)
    Coordinator(run, t).run()
    # the model without site2 is whole but travels only with site2's local model
    assert {label for r in t.requests[0].values() for label in r.cross} == {
        "site1@2", "site3@2", "~site1@2", "~site3@2"}  # fmt: skip
    with RunStore(run) as store:
        events = [(level, m) for _, level, m in store.events()]
        assert [r["status"] for r in store.rounds()] == ["done"] * 3
    assert ("warning", "cross-site validation: round_0002/site2.npz is not whole (torn by a "
            "crash); that model is not validated") in events  # fmt: skip


def test_a_lying_cross_reply_is_dropped_and_the_round_goes_on(tmp_path: Path) -> None:
    def lie(site: str, rep: TaskReply) -> None:
        if site == "site2" and rep.cross:
            label = next(iter(rep.cross))
            rep.cross[label]["TC"][CROSS_DICE] = Summary(1.5, 0.1, 2)
        if site == "site3" and rep.home:
            rep.home["mean"][CROSS_DICE_DIFF] = Summary(0.1, 0.1, 9)  # declared 2 cases
        if site == "site1" and rep.cross:
            rep.cross["site9@1"] = _answer(0.0, 2)  # a model it was never sent

    run = write_run(tmp_path / "run", tiny_plan({s: tmp_path / s for s in SITES}, rounds=2))
    Coordinator(run, CrossArrayTransport(run, lie)).run()
    with RunStore(run) as store:
        rows = store.cross()
        events = " ".join(m for _, _, m in store.events())
        assert [r["status"] for r in store.rounds()] == ["done", "done"]
        assert all(sr.status == "ok" for sr in store.site_rounds())
    assert not any(r.eval_site == "site2" and not r.home for r in rows)
    assert not any(r.eval_site == "site3" and r.home for r in rows)
    assert not any(r.eval_site == "site1" and not r.home and r.round == 2 for r in rows)
    assert any(r.eval_site == "site2" and r.home for r in rows)  # its honest home rows
    assert "site site2 cross-site summaries rejected: cross-site" in events
    assert "TC/dice: mean 1.5 outside [0, 1]" in events
    assert "home mean/dice_diff over 9 cases, declared 2 validation cases" in events
    assert "site9@1, a model it was not sent" in events


def test_sequential_plans_skip_it_with_a_log_line(tmp_path: Path) -> None:
    plan = tiny_plan({s: tmp_path / s for s in SITES}, strategy={"name": "cyclic"},
                     min_sites=1)  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    t = CrossArrayTransport(run)
    Coordinator(run, t).run()
    assert not any(r.cross or r.home for reqs in t.requests for r in reqs.values())
    with RunStore(run) as store:
        events = " ".join(m for _, _, m in store.events())
        assert store.cross() == []
    assert "cross-site validation off: strategy cyclic trains one site per round" in events


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({}, "leave_one_out is false by default"),
        ({"strategy": {"name": "fedadam"}, "cross_site": LOO}, "a server step: not the mean"),
        ({"strategy": {"name": "median"}, "cross_site": LOO}, "a robust statistic"),
    ],
)
def test_only_local_models_travel_without_a_mean_to_take_a_site_from(
    tmp_path: Path, extra: dict[str, object], why: str
) -> None:
    run = write_run(tmp_path / "run", tiny_plan({s: tmp_path / s for s in SITES}, **extra))
    t = CrossArrayTransport(run)
    Coordinator(run, t).run()
    sent = {label for reqs in t.requests for r in reqs.values() for label in r.cross}
    assert sent == {f"{s}@{r}" for s in SITES for r in (1, 2)}, why
    with RunStore(run) as store:
        assert {r.metric for r in store.cross()} == {CROSS_DICE, CROSS_DICE_DIFF}


def test_every_and_models_per_round_bound_what_travels(tmp_path: Path) -> None:
    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=4,
                     cross_site={"every": 2, "models_per_round": 1, **LOO})  # fmt: skip
    run = write_run(tmp_path / "run", plan)
    t = CrossArrayTransport(run)
    Coordinator(run, t).run()
    # cross rounds 1 and 3: home checks there, one model kept each (site1, then site2)
    assert [sorted(s for s, r in reqs.items() if r.home) for reqs in t.requests] == [
        sorted(SITES), [], sorted(SITES), [], []]  # fmt: skip
    sent = [sorted({label for r in reqs.values() for label in r.cross}) for reqs in t.requests]
    assert sent == [[], ["site1@1", "~site1@1"], [], ["site2@3", "~site2@3"], []]
    assert t.parked == [[], ["round_0001"], [], ["round_0003"], []]


def test_with_bounds_off_only_what_was_asked_is_kept(tmp_path: Path) -> None:
    def lie(site: str, rep: TaskReply) -> None:
        rep.cross["site9@1"] = _answer(0.0, 2)
        rep.home = rep.home or _answer(0.3, 2)  # a home check in the final validation

    plan = tiny_plan({s: tmp_path / s for s in SITES}, rounds=1, bounds={"enabled": False})
    run = write_run(tmp_path / "run", plan)
    Coordinator(run, CrossArrayTransport(run, lie)).run()
    with RunStore(run) as store:
        rows = store.cross()
    assert {r.model_site for r in rows} == set(SITES)
    assert {r.round for r in rows if r.home} == {1}


def test_parked_models_read_back_array_by_array_as_saved(tmp_path: Path) -> None:
    import numpy as np

    from fedseg.model.weights import ArraysOnDisk, load_arrays, save_arrays

    arrays = {"b/w": np.arange(6, dtype=np.float16).reshape(2, 3),
              "a": np.array(7, dtype=np.int64), "c": np.ones((0, 4), np.float32)}  # fmt: skip
    save_arrays(tmp_path / "m.npz", arrays)
    lazy = ArraysOnDisk(tmp_path / "m.npz")
    assert list(lazy) == list(arrays) == list(load_arrays(tmp_path / "m.npz")) and len(lazy) == 3
    for k, v in arrays.items():
        assert lazy[k].dtype == v.dtype and lazy[k].shape == v.shape
        np.testing.assert_array_equal(lazy[k], v)
    with pytest.raises(KeyError):
        lazy["d"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_file_saved_without_fsync_is_whole_and_a_torn_one_is_told(tmp_path: Path) -> None:
    import numpy as np

    from fedseg.model.weights import arrays_intact, load_arrays, save_arrays

    arrays = {"w": np.arange(4096, dtype=np.float32), "step": np.array(3, np.int64)}
    save_arrays(tmp_path / "m.npz", arrays, sync=False)
    assert arrays_intact(tmp_path / "m.npz") and not (tmp_path / "m.npz.tmp").exists()
    assert all(np.array_equal(v, arrays[k]) for k, v in load_arrays(tmp_path / "m.npz").items())
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[200] ^= 0xFF  # inside the first array's bytes: its CRC no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    assert not arrays_intact(tmp_path / "half.npz") and not arrays_intact(tmp_path / "flipped.npz")
    assert not arrays_intact(tmp_path / "missing.npz")
