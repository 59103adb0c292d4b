from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedseg.errors import FedsegError
from fedseg.model.summary import Summary
from fedseg.run_folder import ComputeUsed, LivePhase, LiveState, RunStatus, SiteActivity
from fedseg.tracking.alarms import AlarmConfig, replay_alarms
from fedseg.tracking.report.sections import summary_section
from fedseg.tracking.status import alarm_labels, open_run, read_status, render_status
from fedseg.tracking.store import RunStore, SiteRound
from tests.tracking.conftest import noisy, rising

SRC = Path(__file__).resolve().parents[2] / "src"


def _text(renderable) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_status_of_a_running_run_read_while_the_writer_is_open(tmp_path: Path) -> None:
    run = tmp_path / "run"
    writer = RunStore(run)
    try:
        writer.meta.set_planned_rounds(10)
        for rnd in (1, 2):
            writer.start_round(rnd)
            for s, d in (("s1", 0.3), ("s2", 0.4)):
                writer.record_validation(
                    rnd - 1,
                    s,
                    {g: {"dice": Summary(d + rnd / 10, 0.1, 8)} for g in ("ET", "TC", "WT")},
                )
                writer.record_site_round(
                    SiteRound(
                        rnd, s, "ok", n_train=30, n_val=8, train_loss=0.4, update_distance=0.5
                    )
                )
            if rnd == 1:
                writer.finish_round(rnd, n_sites=2)
        st = read_status(run)  # round 2 still running, the writer holds the database open
    finally:
        writer.close()
    assert st.state == "running" and st.rounds_done == 1 and st.running_round == 2
    assert st.rounds_planned == 10
    assert [s.site for s in st.sites] == ["s1", "s2"]
    assert st.sites[1].model_round == 1 and st.sites[1].scores["mean"] == pytest.approx(0.6)
    assert st.federation_scores["mean"] == pytest.approx(0.55)
    out = _text(render_status(st))
    assert "rounds done 1/10" in out and "(round 2 running)" in out and "no alarms" in out


def test_status_and_report_show_each_sites_device_and_precision(tmp_path: Path) -> None:
    """Per site, the device and precision of its latest round that recorded them (a failed
    round records none); a row from before they were recorded shows "-"."""
    gpu = ComputeUsed(device="cuda:0 (NVIDIA H200)", precision="bf16")
    with RunStore(tmp_path) as store:
        store.start_round(1)
        store.record_site_round(SiteRound(1, "s1", "ok", n_train=3, extra=gpu.extra()))
        store.record_site_round(SiteRound(1, "s2", "ok", n_train=3, extra={"train_wall_s": 1.0}))
        store.finish_round(1, n_sites=2)
        store.start_round(2)
        store.record_site_round(SiteRound(2, "s1", "failed", error="x"))
        store.record_site_round(SiteRound(2, "s2", "ok", n_train=3))
        store.finish_round(2, n_sites=1)
        assert [r.compute for r in store.site_rounds("s1")] == [gpu, None]
    st = read_status(tmp_path)
    assert {s.site: s.compute for s in st.sites} == {"s1": gpu, "s2": None}
    out = _text(render_status(st))
    assert "device" in out and "precision" in out
    row = {n: next(ln for ln in out.splitlines() if ln.startswith(f"│ {n} ")) for n in ("s1", "s2")}
    assert "cuda:0 (NVIDIA H200)" in row["s1"] and "bf16" in row["s1"]
    assert "cuda" not in row["s2"] and "bf16" not in row["s2"]
    page = summary_section(st)
    assert "<th>device</th><th>precision</th>" in page
    assert '<td class="l">cuda:0 (NVIDIA H200)</td><td class="l">bf16</td>' in page


def test_status_shows_why_a_sites_latest_round_failed(tmp_path: Path) -> None:
    """A run that stopped because its sites failed says each site's own line (the round's
    error tells the user to look for them in `fedseg status`); an earlier failure that a
    later round made good is not shown."""
    line = "privacy: privacy budget: this round would take ε to 8.3 > 8 at δ=1e-05; ..."
    with RunStore(tmp_path) as store:
        store.start_round(1)
        store.record_site_round(SiteRound(1, "s1", "failed", error="data: old trouble"))
        store.record_site_round(SiteRound(1, "s2", "ok", n_train=3))
        store.finish_round(1, n_sites=1)
        store.start_round(2)
        store.record_site_round(SiteRound(2, "s1", "ok", n_train=3))
        store.record_site_round(SiteRound(2, "s2", "failed", error=line))
        store.finish_round(2, status="failed", n_sites=1)
    st = read_status(tmp_path)
    assert {s.site: s.error for s in st.sites} == {"s1": None, "s2": line}
    out = _text(render_status(st))
    assert f"s2 round 2: {line}" in out and "old trouble" not in out


def test_status_shows_alarms_and_never_writes(make_run) -> None:
    base = rising(9)
    run = make_run(
        {"a": noisy(base, 0.01, 1), "b": noisy(base, 0.01, 2), "bad": [v - 0.2 for v in base]}
    )
    with RunStore(run) as store:
        replay_alarms(store, AlarmConfig())
        labels = alarm_labels(store.alarms())
    assert labels == {"bad": "below_federation (since round 6)"}
    st = read_status(run)
    assert st.state == "done" and st.rounds_done == 8
    assert [s.alarms for s in st.sites] == [[], [], ["below_federation"]]
    out = _text(render_status(st))
    assert "below_federation" in out and "6-8" in out
    ro = open_run(run)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.log("should not be written")
    ro.close()


def test_status_cli(make_run, tmp_path: Path) -> None:
    from fedseg.cli.main import _register, app

    _register()
    run = make_run({"site1": rising(4), "site2": rising(4)})
    res = CliRunner().invoke(app, ["status", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "site1" in res.output and "site2" in res.output and "rounds done 3/3" in res.output
    # A folder without a run store: one line on stderr, exit 2, no traceback, nothing created.
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "fedseg", "status", str(empty)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no run store" in proc.stderr
    assert list(empty.iterdir()) == []
    with pytest.raises(FedsegError):
        read_status(tmp_path / "missing")


def test_status_before_the_first_result_shows_plan_sites_and_live_phase(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run).mkdir()
    (run / "plan.yaml").write_text("sites:\n  h1: {data: /x}\n  h2: {data: /y}\nrounds: 5\n")
    with RunStore(run) as store:
        store.meta.set_status(RunStatus.RUNNING)
        store.meta.set_live(
            LiveState(
                round=1,
                phase=LivePhase.TRAINING,
                sites={"h1": SiteActivity.TRAINING, "h2": SiteActivity.WAITING},
            )
        )
        store.start_round(1)
    st = read_status(run)
    assert st.state == "running" and st.phase == "training"
    assert [(s.site, s.live) for s in st.sites] == [("h1", "training"), ("h2", "waiting")]
    out = _text(render_status(st))
    assert "phase: training" in out and "0/5" in out and "waiting" in out
    with RunStore(run) as store:
        store.meta.set_status(RunStatus.FAILED, "round 1: only 0 site(s) delivered a usable update")
    st = read_status(run)
    assert st.state == "failed" and "usable update" in _text(render_status(st))
