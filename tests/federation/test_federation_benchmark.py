"""``benchmarks/federation.py``'s numbers: a round's critical path over site workers and its
wall time from start to start (the side-by-side table is built from them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from fedseg.run_folder import SiteRoundStatus
from fedseg.tracking.store import SiteRound

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "federation.py"


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("federation_benchmark", BENCH)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = mod  # type: ignore[union-attr]  # dataclasses look it up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _sr(site: str, train: float, val: float, worker: int | None = None) -> SiteRound:
    extra: dict[str, object] = {"train_wall_s": train, "val_wall_s": val}
    if worker is not None:
        extra["worker"] = worker
    return SiteRound(1, site, SiteRoundStatus.OK, extra=extra)


def test_the_critical_path_sums_each_worker_s_tasks(bench) -> None:  # type: ignore[no-untyped-def]
    # two workers, three sites: worker 7 ran site1 then site3 (3 + 2), worker 8 site2 (4)
    srs = [_sr("site1", 2.0, 1.0, 7), _sr("site2", 3.0, 1.0, 8), _sr("site3", 1.5, 0.5, 7)]
    assert bench.critical_path(srs) == pytest.approx(5.0)
    # a worker per site (the deployment engine): the slowest site's compute
    assert bench.critical_path([_sr("a", 2, 1, 1), _sr("b", 3, 1, 2)]) == pytest.approx(4.0)
    # a reply that names no worker is a worker of its own; a site not asked computes nothing
    idle = SiteRound(1, "site4", SiteRoundStatus.NOT_ASKED)
    assert bench.critical_path([_sr("a", 2, 1), _sr("b", 3, 1), idle]) == pytest.approx(4.0)
    assert bench.critical_path([]) == 0.0


def test_a_round_lasts_until_the_next_one_starts(bench) -> None:  # type: ignore[no-untyped-def]
    rounds = [
        {"round": 1, "started": 100.0, "wall_s": 9.0},
        {"round": 2, "started": 110.0, "wall_s": 1.5},  # 0.5 s after its end: round 3 starts
        {"round": 3, "started": 112.0, "wall_s": 1.25},  # the last: to its end
    ]
    assert bench.round_walls(rounds) == {1: 10.0, 2: 2.0, 3: 1.25}
