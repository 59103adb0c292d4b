"""Runs for the dashboard tests (built with ``RunStore``, no federation) and a real server.

- ``seg_run``: a finished 3-site segmentation run of 2 rounds (``tests.tracking.conftest``'s
  ``build_run``); ``add_round`` writes one more round into it, as the aggregator does.
- ``synthesis_run``: a 2-site synthesis run (meta ``task``; SSIM per modality, one site
  without FLAIR).
- ``serving(app)``: the app under a real uvicorn on a free loopback port, in a thread (the
  event stream needs a real server: the test client waits for a response to end).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedseg.data.labels import REGIONS
from fedseg.model.summary import Summary
from fedseg.run_folder import AlarmEvidence, AlarmKind, AlarmLevel, DeclaredCases, Task
from fedseg.tracking.store import CROSS_DICE_DIFF, Alarm, CrossRow, RunStore, SiteRound
from tests.tracking.conftest import build_run

SITES = ("site1", "site2", "site3")


@pytest.fixture
def seg_run(tmp_path: Path) -> Path:
    return build_run(
        tmp_path / "run",
        {"site1": [0.2, 0.5, 0.7], "site2": [0.25, 0.45, 0.6], "site3": [0.3, 0.55, 0.75]},
    )


def add_round(run: Path, rnd: int, sites: tuple[str, ...] = SITES, dice: float = 0.8) -> None:
    """Round ``rnd``: each site validates model ``rnd - 1`` and trains; then it is done."""
    with RunStore(run) as store:
        store.start_round(rnd)
        for site in sites:
            store.record_validation(
                rnd - 1, site, {g: {"dice": Summary(dice, 0.1, 10)} for g in REGIONS}
            )
            store.record_site_round(
                SiteRound(rnd, site, "ok", n_train=40, n_val=10, train_loss=0.3, wall_s=2.0)
            )
        store.finish_round(rnd, n_sites=len(sites))
        store.log(f"round {rnd} done")


def add_evidence(run: Path) -> None:
    """Cross-site rows (site2's local models lose Dice at the others, in ET and mean), a
    labels_disagree alarm on site2 with its evidence and an observation on site1."""
    rows = []
    for rnd in (2, 3):
        for model in SITES:
            for ev in SITES:
                if model == ev:
                    continue
                for region, loss in (("mean", -0.3), ("ET", -0.4)):
                    diff = loss if model == "site2" else 0.01
                    rows.append(CrossRow(rnd, model, rnd - 1, ev, rnd - 1, region,
                                         CROSS_DICE_DIFF, Summary(diff, 0.1, 10)))  # fmt: skip
    evidence = AlarmEvidence(
        kind=AlarmKind.LABELS_DISAGREE,
        region="mean",
        statistic="z",
        value=-6.1,
        p=1e-5,
        effect=-0.3,
        margin=0.1,
        n_cases=20,
        evaluators=["site1", "site3"],
        model_rounds=[1, 2],
        text="site2's local models lose 0.30 Dice on the other sites' cases",
    )
    with RunStore(run) as store:
        store.record_cross(rows)
        store.record_alarm(
            Alarm(2, "site2", AlarmKind.LABELS_DISAGREE, "labels disagree", evidence=evidence)
        )
        store.record_alarm(
            Alarm(2, "site1", AlarmKind.BELOW_FEDERATION, "lower own score",
                  AlarmLevel.OBSERVATION)
        )  # fmt: skip


@pytest.fixture
def synthesis_run(tmp_path: Path) -> Path:
    run = tmp_path / "synth"
    run.mkdir()
    mods = {"siteA": ("t1", "t1ce", "t2", "flair"), "siteB": ("t1", "t1ce", "t2")}
    with RunStore(run) as store:
        store.meta.set_task(Task.SYNTHESIS)
        store.meta.set_declared(
            {s: DeclaredCases(n_train=8, n_val=4, modalities=list(m)) for s, m in mods.items()}
        )
        store.meta.set_planned_rounds(2)
        for mr in range(3):
            rnd = mr + 1
            if rnd <= 2:
                store.start_round(rnd)
            for site, have in mods.items():
                store.record_validation(
                    mr, site, {m: {"ssim": Summary(0.5 + 0.1 * mr, 0.05, 4)} for m in have}
                )
                if rnd <= 2:
                    store.record_site_round(
                        SiteRound(rnd, site, "ok", n_train=8, n_val=4, train_loss=0.2)
                    )
            if rnd <= 2:
                store.finish_round(rnd, n_sites=2)
    return run


@contextmanager
def serving(app: object) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of ``app`` served by uvicorn in a thread."""
    import uvicorn

    from fedseg.dashboard.serve import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, ws="none")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
