"""Streaming aggregation: a streaming strategy's updates are parked on disk as they arrive
and folded array by array; the results equal the batch path's (every update in memory)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedseg.federation.rounds.aggregation import (
    clip_update,
    difference_norm,
    n_bytes,
    norm_bound,
    weighted_average,
)
from fedseg.federation.rounds.coordinator import Coordinator, Exchanged, initial_weights
from fedseg.federation.rounds.spool import Spool
from fedseg.federation.rounds.strategies.registry import STRATEGIES
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.model_file import load_model
from fedseg.model.weights import Weights, load_arrays
from fedseg.plan import load_plan
from fedseg.run_folder import SPOOL_DIR, model_path, spool_dir, strategy_state_path
from fedseg.tracking.store import RunStore
from tests.federation.fed_helpers import ArrayTransport, tiny_plan, write_run

#: 12 sites, mixed case counts; "big" is clipped (10 x the median change), "huge" rejected
SITES = [f"s{i:02d}" for i in range(10)] + ["big", "huge"]
OFFSETS = {s: 0.01 * (1 + i % 5) for i, s in enumerate(SITES)} | {"big": 0.3, "huge": 0.02}
N_TRAIN = {s: 1 + (7 * i) % 9 for i, s in enumerate(SITES)}


def _scale_huge(site: str, w: Weights) -> Weights:
    return {k: v * np.float32(1e6) if site == "huge" and v.dtype.kind == "f" else v
            for k, v in w.items()}  # fmt: skip


def _run(tmp_path: Path, name: str, strategy: str, streams: bool, monkeypatch: pytest.MonkeyPatch,
         **plan: object) -> Path:  # fmt: skip
    monkeypatch.setattr(STRATEGIES[strategy], "streams", streams)
    sites = {s: tmp_path / s for s in SITES}
    run = write_run(tmp_path / name, tiny_plan(sites, strategy={"name": strategy, "params": {
        "optimizer_state": "average"}}, retention={"keep_every": None},
        **plan))  # every round's model is compared  # fmt: skip
    Coordinator(run, ArrayTransport(OFFSETS, N_TRAIN, tamper=_scale_huge)).run()
    return run


def _records(run: Path) -> list[tuple]:
    with RunStore(run) as store:
        return [(s.round, s.site, s.status, s.error, s.update_norm, s.update_distance,
                 (s.extra or {}).get("clipped_to")) for s in store.site_rounds()]  # fmt: skip


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedavgm"])
def test_streamed_rounds_equal_the_batch_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    batch = _run(tmp_path, "batch", strategy, False, monkeypatch)
    streamed = _run(tmp_path, "streamed", strategy, True, monkeypatch)
    for rnd in (1, 2):
        a = load_model(model_path(batch, rnd)).weights
        b = load_model(model_path(streamed, rnd)).weights
        assert list(a) == list(b)
        for k in a:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7)
        # the strategy's state (server moments, the averaged optimizer state) likewise
        sa = load_arrays(strategy_state_path(model_path(batch, rnd)))
        sb = load_arrays(strategy_state_path(model_path(streamed, rnd)))
        assert sorted(sa) == sorted(sb) and any(k.startswith("optimizer/") for k in sa)
        for k in sa:
            np.testing.assert_allclose(sb[k], sa[k], rtol=1e-6, atol=1e-9)
    ra, rb = _records(batch), _records(streamed)
    assert [r[:4] for r in ra] == [r[:4] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        np.testing.assert_allclose(np.array(y[4:], float), np.array(x[4:], float), rtol=1e-9)
    by_site = {(r[0], r[1]): r for r in rb}
    assert by_site[(1, "huge")][2] == "rejected" and "reject_norm_ratio" in by_site[(1, "huge")][3]
    assert by_site[(1, "big")][2] == "ok" and by_site[(1, "big")][6] is not None
    assert not (streamed / SPOOL_DIR).exists()


def test_streamed_fedavg_is_the_batch_weighted_average(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1 by hand: today's math on the updates in memory (clipped, one rejected)."""
    run = _run(tmp_path, "run", "fedavg", True, monkeypatch, rounds=1)
    w0 = initial_weights(load_plan(run / "plan.yaml"))
    updates = {s: _scale_huge(s, {k: v + np.float32(OFFSETS[s]) if v.dtype.kind == "f"
                                  else v for k, v in w0.items()}) for s in SITES}  # fmt: skip
    norms = {s: difference_norm(u, w0) for s, u in updates.items()}
    median = norm_bound(list(norms.values()), 1.0)
    kept = {s: clip_update(u, w0, 3.0 * median) for s, u in updates.items() if s != "huge"}
    want = weighted_average(list(kept.values()), [N_TRAIN[s] for s in kept])
    got = load_model(model_path(run, 1)).weights
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


class _Watching(ArrayTransport):
    """``ArrayTransport`` that checks, after each handing over, that the coordinator took
    the weights out of the reply and parked them in the round's spool."""

    def __init__(self, run: Path) -> None:
        super().__init__(OFFSETS, N_TRAIN)
        self.run, self.parked = run, []

    def exchange(self, requests: dict[str, TaskRequest], timeout_s: float,
                 on_result: Callable[[str, Exchanged], None]) -> None:  # fmt: skip
        def watch(site: str, ex: Exchanged) -> None:
            on_result(site, ex)
            assert isinstance(ex.result, TaskReply)
            if requests[site].epochs > 0:
                assert ex.result.weights is None and ex.result.optimizer_state is None
                folder = spool_dir(self.run, requests[site].round)
                self.parked.append(len(list(folder.glob("*.bin"))))

        super().exchange(requests, timeout_s, watch)


def test_the_coordinator_takes_each_update_and_parks_it(tmp_path: Path) -> None:
    sites = {s: tmp_path / s for s in SITES}
    run = write_run(tmp_path / "run", tiny_plan(sites, rounds=1))
    t = _Watching(run)
    Coordinator(run, t).run()
    # each reply's weights and optimizer state, parked as the reply came
    assert t.parked == [2 * i for i in range(1, len(SITES) + 1)]
    assert not (run / SPOOL_DIR).exists()


def _peak_bytes(run: Path) -> int:
    tracemalloc.start()
    try:
        Coordinator(run, ArrayTransport(dict.fromkeys(SITES, 0.01), N_TRAIN)).run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_the_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites = {s: tmp_path / s for s in SITES}
    plan = tiny_plan(sites, rounds=1, network={"base_filters": 16, "depth": 2})
    model = n_bytes(initial_weights(plan))
    monkeypatch.setattr(STRATEGIES["fedavg"], "streams", False)
    batch = _peak_bytes(write_run(tmp_path / "batch", plan))
    monkeypatch.setattr(STRATEGIES["fedavg"], "streams", True)
    streamed = _peak_bytes(write_run(tmp_path / "streamed", plan))
    assert batch > len(SITES) * model  # every update at once
    # the global model, the new one, the reply in hand and one array's float64 sum
    assert streamed < 5 * model, (streamed / model, batch / model)


def test_spool_reads_back_what_it_parked(tmp_path: Path) -> None:
    arrays = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "step": np.array(7, np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 2), np.float16),
    }
    spool = Spool(tmp_path / "spool" / "round_0001")
    parked = spool.park(arrays)
    assert list(parked) == list(arrays) and len(parked) == len(arrays)
    for k, v in arrays.items():
        assert parked[k].dtype == v.dtype and parked[k].shape == v.shape
        np.testing.assert_array_equal(parked[k], v)
    spool.remove()
    assert not (tmp_path / "spool").exists()
