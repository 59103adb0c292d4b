"""Helpers of the federation tests: tiny plans and an in-process array transport."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedseg.federation.rounds.coordinator import Exchanged, SiteFailure
from fedseg.federation.rounds.tasks import TaskReply, TaskRequest
from fedseg.model.config import NetworkConfig
from fedseg.model.summary import Summary
from fedseg.model.weights import Weights
from fedseg.plan import PLAN_FILE, PlanConfig, SiteConfig, save_plan
from fedseg.run_folder import DeclaredCases
from fedseg.train.config import TrainConfig

SITES = ("site1", "site2", "site3")


def tiny_plan(sites: dict[str, Path], **overrides: object) -> PlanConfig:
    """A plan that trains a 4-filter, depth-2 network on 16^3 patches: seconds per round.
    The tiny sites validate on one case, so the plan lets summaries cover one case
    (``privacy.min_summary_cases: 1``; the floor's own tests set it)."""
    base: dict[str, object] = {
        "name": "test",
        "sites": {s: SiteConfig(data=p) for s, p in sites.items()},
        "rounds": 2,
        "local_epochs": 1,
        "min_sites": 2,
        "round_timeout_s": 240,
        "connect_timeout_s": 120,
        "network": NetworkConfig(base_filters=4, depth=2),
        "train": TrainConfig.cpu(
            patch_size=(16, 16, 16),
            val_roi=(32, 32, 32),
            val_overlap=0.0,
            val_batch_size=4,
            cache_mb=64,
        ),
    }
    base["privacy"] = {"min_summary_cases": 1}
    base.update(overrides)
    return PlanConfig.model_validate(base)


def write_run(run_dir: Path, plan: PlanConfig) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_plan(run_dir / PLAN_FILE, plan)
    return run_dir


class FakeClock:
    """A clock that moves only when told (``advance``): the time of the straggler tests,
    shared by ``ArrayTransport`` and the ``Coordinator`` (its ``clock``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class ArrayTransport:
    """An in-process transport whose sites answer with hand-made arrays: each site returns
    the global weights plus a constant ``offsets[site]`` (and what ``tamper`` makes of it),
    an optimizer state whose moments equal ``offsets[site]`` (step = 10 * cases), and
    validation Dice 0.5 + offset over ``n_val[site]`` cases (default 2). Each site declares
    ``n_train[site]`` and its ``n_val`` in its hello (``declare`` overrides that). Every
    request is kept for the test to inspect. It tests the round loop and the math, not
    training.

    Slow sites: ``delays[site]`` is the time a site's reply takes on ``clock`` (default 0;
    ``math.inf``: it never answers). An exchange hands over the replies that are due, asks
    ``stop_when``, then moves the clock on by ``tick`` until every reply came, ``stop_when``
    says stop, or ``timeout_s`` passed: deterministic, no sleeping. The replies still out
    are late: ``pull_late`` frees a site once the clock passed its reply's time. ``elapsed``
    keeps each exchange's duration on the clock."""

    def __init__(
        self,
        offsets: dict[str, float],
        n_train: dict[str, int],
        tamper: Callable[[str, Weights], Weights] | None = None,
        fail: dict[str, SiteFailure] | None = None,
        n_val: dict[str, int] | None = None,
        delays: dict[str, float] | None = None,
        clock: FakeClock | None = None,
        tick: float = 1.0,
    ) -> None:
        self.offsets, self.n_train = offsets, n_train
        self.n_val = {s: (n_val or {}).get(s, 2) for s in offsets}
        self.tamper = tamper
        self.fail = fail or {}
        self.delays = delays or {}
        self.clock = clock or FakeClock()
        self.tick = tick
        #: site -> the time its late reply comes (inf: never)
        self.late: dict[str, float] = {}
        self.elapsed: list[float] = []
        self.requests: list[dict[str, TaskRequest]] = []
        #: what each site declares in its hello (default: its counts)
        self.declare: dict[str, DeclaredCases] = {
            s: DeclaredCases(n_train=n_train.get(s, 0), n_val=self.n_val[s]) for s in offsets
        }

    def connected_sites(self, wanted: list[str], wait_s: float) -> list[str]:
        return [s for s in wanted if s in self.offsets]

    def declared_cases(self) -> dict[str, DeclaredCases]:
        return dict(self.declare)

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
        stop_when: Callable[[set[str]], bool] | None = None,
    ) -> None:
        self.requests.append(requests)
        t0 = self.clock()
        due = {s: t0 + self.delays.get(s, 0.0) for s in requests}
        received: set[str] = set()
        while True:
            for site, req in requests.items():
                if site not in received and due[site] <= self.clock():
                    received.add(site)
                    on_result(site, self._reply(site, req))
            if len(received) == len(requests):
                break
            if stop_when is not None and stop_when(set(received)):
                break
            if self.clock() - t0 >= timeout_s:
                break
            self.clock.advance(self.tick)
        self.late.update({s: due[s] for s in requests if s not in received})
        self.elapsed.append(self.clock() - t0)

    def pull_late(self) -> set[str]:
        free = {s for s, t in self.late.items() if t <= self.clock()}
        for s in free:
            del self.late[s]
        return free

    def _reply(self, site: str, req: TaskRequest) -> Exchanged:
        if site in self.fail:
            return Exchanged(self.fail[site], 10, 0, 0.1)
        w = opt = None
        off = self.offsets[site]
        if req.epochs > 0:
            w = {
                k: v + np.asarray(off).astype(v.dtype) if v.dtype.kind == "f"
                else v.copy() for k, v in req.weights.items()
            }  # fmt: skip
            opt = {"step": np.array(10 * self.n_train[site], np.int64),
                   "exp_avg/w": np.full(2, off, np.float32)}  # fmt: skip
            if self.tamper is not None:
                w = self.tamper(site, w)
        n_val = self.n_val[site]
        rep = TaskReply(
            site=site, weights=w, n_train=self.n_train[site], n_val=n_val,
            train_loss=0.5,
            validation={r: {"dice": Summary(0.5 + off, 0.1, n_val)}
                        for r in ("ET", "TC", "WT", "mean")},
            optimizer_state=opt,
        )  # fmt: skip
        return Exchanged(rep, 10, 20, 0.1)


def float_keys(w: Weights) -> list[str]:
    """Names of the floating-point arrays of ``w`` (those a transport offsets)."""
    return [k for k, v in w.items() if v.dtype.kind == "f"]


def run_folder_text(run: Path) -> dict[Path, str]:
    """Every file under ``run`` as text (bytes as latin-1); SQLite databases as their dump."""
    out = {}
    for p in sorted(run.rglob("*")):
        if not p.is_file():
            continue
        raw = p.read_bytes()
        if raw[:16] == b"SQLite format 3\x00":
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            try:
                out[p] = "\n".join(con.iterdump())
            finally:
                con.close()
        else:
            out[p] = raw.decode("latin-1")
    return out


class Dies:
    """Mixin for an in-process test transport (put it first in the bases): its aggregator
    "is killed" (``RuntimeError``) when round ``dies_in`` starts its exchange (None: never):
    what a restart test needs before it resumes."""

    dies_in: int | None = None

    def exchange(
        self,
        requests: dict[str, TaskRequest],
        timeout_s: float,
        on_result: Callable[[str, Exchanged], None],
        stop_when: Callable[[set[str]], bool] | None = None,
    ) -> None:
        if next(iter(requests.values())).round == self.dies_in:
            raise RuntimeError("aggregator killed")
        more = {} if stop_when is None else {"stop_when": stop_when}  # as the coordinator
        super().exchange(requests, timeout_s, on_result, **more)  # type: ignore[misc]


class DyingTransport(Dies, ArrayTransport):
    """``ArrayTransport`` that dies in round ``dies_in`` (``Dies``)."""

    def __init__(self, dies_in: int | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dies_in = dies_in
