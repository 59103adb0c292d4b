"""``fedseg status`` and the live table fit the width they are drawn at: a full table from
120 columns, a compact one from 60, one line per site below, and never a cell cut to "…"."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from fedseg.federation.commands.watch import live_table
from fedseg.plan import load_plan
from fedseg.run_folder import PLAN_FILE, AlarmEvidence, AlarmKind, AlarmLevel
from fedseg.tracking.status import read_status, render_status
from fedseg.tracking.status_layout import Layout, layout_for, short_alarms, short_kind
from fedseg.tracking.store import Alarm, RunStore
from tests.helpers import run_fedseg
from tests.tracking.conftest import rising

SITES = ("hospital_north", "site2", "university_clinic_b")
KINDS = ("below_federation", "update_outlier", "stalled", "labels_disagree")
WIDTHS = (40, 80, 200)


def _draw(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def run(make_run) -> Path:
    """A finished run with long site names and an alarm of every kind."""
    run = make_run({s: rising(5) for s in SITES})
    with RunStore(run) as store:
        for i, kind in enumerate(KINDS):
            store.record_alarm(Alarm(3 + i % 2, SITES[i % 3], kind, f"{kind} because of x"))
    return _with_plan(run)


def _with_plan(run: Path) -> Path:
    (run / PLAN_FILE).write_text(
        "sites:\n" + "".join(f"  {s}: {{data: /{s}}}\n" for s in SITES) + "rounds: 4\n"
    )
    return run


def test_the_layout_follows_the_width() -> None:
    assert [layout_for(w) for w in (200, 120, 119, 80, 60, 59, 40)] == [
        Layout.WIDE, Layout.WIDE, Layout.COMPACT, Layout.COMPACT, Layout.COMPACT,
        Layout.LINES, Layout.LINES,
    ]  # fmt: skip
    assert short_kind("labels_disagree") == "labels!" and short_kind("new_kind") == "new_kind"
    assert short_alarms(["below_federation", "below_federation"], ["x"]) == "below obs"
    assert short_alarms([]) == "-"


@pytest.mark.parametrize("width", WIDTHS)
def test_status_at_any_width_cuts_no_cell(run: Path, width: int) -> None:
    out = _draw(render_status(read_status(run)), width)
    assert "…" not in out
    assert max(len(ln) for ln in out.splitlines()) <= width
    flat = " ".join(out.split())  # a line may wrap at 40 columns, a name is never cut
    for name in (*SITES, *KINDS):
        assert name in flat, (name, out)
    wide, lines = "update dist" in out, "│" not in out and "─" not in out
    assert (wide, lines) == {200: (True, False), 80: (False, False), 40: (False, True)}[width]
    if width == 80:  # the compact table: one row per site, every number in it
        row = next(ln for ln in out.splitlines() if ln.startswith("site2 "))
        assert "40/10" in row and row.count("0.") == 4  # cases; mean and ET TC WT
        assert "labels!" in next(ln for ln in out.splitlines() if ln.startswith("hospital_"))


def test_a_name_too_long_for_the_compact_table_gives_lines(make_run) -> None:
    long = "a_very_long_site_name_that_no_narrow_table_has_room_for_at_all"
    out = _draw(render_status(read_status(make_run({long: rising(3), "b": rising(3)}))), 80)
    assert "…" not in out and long in out and "│" not in out
    assert next(ln for ln in out.splitlines() if ln.startswith("b ")).startswith("b  ok r2")


def test_a_forced_layout_is_drawn_as_asked(run: Path) -> None:
    view = read_status(run)
    assert "│" not in _draw(render_status(view, Layout.LINES), 200)
    fitted = render_status(view, Layout.WIDE)
    wide = fitted.console_for(Console(width=80))
    assert wide.width > 120  # --wide in a pipe: long lines rather than cut cells
    assert fitted.console_for(Console(width=300)).width == 300
    out = _draw(fitted, wide.width)
    assert "update dist" in out and "…" not in out


@pytest.mark.parametrize("width", WIDTHS)
def test_the_live_table_at_any_width_cuts_no_cell(run: Path, width: int) -> None:
    with RunStore(run) as store:
        out = _draw(live_table(store, load_plan(run / PLAN_FILE)), width)
    assert "…" not in out and max(len(ln) for ln in out.splitlines()) <= width
    flat = " ".join(out.split())
    assert all(s in flat for s in SITES)
    kinds = KINDS if width != 80 else [short_kind(k) for k in KINDS]
    assert all(k in flat for k in kinds), out
    assert ("Dice ET" in out, "│" in out) == {
        200: (True, True),
        80: (False, False),
        40: (True, False),
    }[width]


def test_status_cli_flags(run: Path) -> None:
    res = run_fedseg("status", run, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["state"] == "done" and [s["site"] for s in data["sites"]] == sorted(SITES)
    assert data["score"]["label"] == "Dice" and {a["kind"] for a in data["alarms"]} == set(KINDS)
    assert data == json.loads(json.dumps(read_status(run).to_json()))
    lines = run_fedseg("status", run, "--lines")
    assert lines.returncode == 0 and "│" not in lines.stdout
    assert any(ln.startswith("site2  ok r4") for ln in lines.stdout.splitlines())
    piped = run_fedseg("status", run, "--wide", env={"COLUMNS": "80"})
    assert piped.returncode == 0 and "update dist" in piped.stdout and "…" not in piped.stdout
    both = run_fedseg("status", run, "--wide", "--lines")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "--wide" in both.stderr
    follow = run_fedseg("status", run, "--json", "--follow")
    assert follow.returncode == 2 and "Traceback" not in follow.stderr


def test_json_has_no_nan(make_run) -> None:
    view = read_status(make_run({"a": rising(3), "b": rising(3)}))
    site = replace(view.sites[1], train_loss=float("nan"), scores={"mean": float("inf")})
    data = replace(view, sites=[view.sites[0], site]).to_json()
    back = json.loads(json.dumps(data, allow_nan=False))  # raises on NaN
    assert back["sites"][1]["train_loss"] is None and back["sites"][1]["scores"]["mean"] is None
    assert back["sites"][0]["scores"]["mean"] == pytest.approx(view.sites[0].scores["mean"])


EVIDENCE = AlarmEvidence(
    kind=AlarmKind.LABELS_DISAGREE, region="TC", statistic="z", value=-4.2, p=0.0001,
    effect=-0.21, margin=0.05, n_cases=9, evaluators=["site2", "hospital_north"],
    model_rounds=[2, 3], text="its local models lose 0.21 TC Dice on 2 other sites' 9 cases",
)  # fmt: skip


@pytest.fixture
def noted_run(make_run) -> Path:
    """An alarm with evidence at one site, an observation (never notified) at another."""
    run = make_run({s: rising(5) for s in SITES})
    with RunStore(run) as store:
        store.record_alarm(Alarm(3, "university_clinic_b", EVIDENCE.kind, "labels disagree",
                                 AlarmLevel.ALARM, EVIDENCE))  # fmt: skip
        for rnd in (2, 3, 4):
            store.record_alarm(Alarm(rnd, "site2", "below_federation", "below by 0.1",
                                     AlarmLevel.OBSERVATION))  # fmt: skip
    return _with_plan(run)


def test_status_counts_alarms_and_marks_observations(noted_run: Path) -> None:
    view = read_status(noted_run)
    by_site = {x.site: x for x in view.sites}
    assert by_site["site2"].alarms == [] and by_site["site2"].observations == ["below_federation"]
    assert by_site["university_clinic_b"].alarms == ["labels_disagree"]
    assert [(a.site, a.level) for a in view.alarms] == [("university_clinic_b", "alarm")]
    assert [(o.site, o.first, o.last) for o in view.observations] == [("site2", 2, 4)]
    assert view.alarms[0].evidence == EVIDENCE
    for width in WIDTHS:
        out = _draw(render_status(view), width)
        flat = " ".join(out.split())
        assert "…" not in out and "observations (shown, never notified):" in flat
        assert "site2 below_federation (round 2-4)" in flat and "labels_disagree" in flat
    compact = _draw(render_status(view), 80).splitlines()
    assert next(ln for ln in compact if ln.startswith("site2 ")).rstrip().endswith(" obs")
    assert "labels!" in next(ln for ln in compact if ln.startswith("university_clinic_b "))
    data = json.loads(json.dumps(view.to_json()))
    assert data["alarms"][0]["evidence"]["p"] == 0.0001
    assert data["observations"][0]["level"] == "observation"
    with RunStore(noted_run) as store:  # the live table: the same marker
        live = _draw(live_table(store, load_plan(noted_run / PLAN_FILE)), 80)
    assert next(ln for ln in live.splitlines() if ln.startswith("site2 ")).rstrip().endswith("obs")


def test_alarms_cli_shows_evidence_and_observations_apart(noted_run: Path) -> None:
    res = run_fedseg("alarms", noted_run)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "evidence: its local models lose 0.21 TC Dice" in " ".join(out.split())
    head = out.index("observations (shown, never notified)")
    assert out.index("labels_disagree") < head < out.index("below_federation")
    listed = run_fedseg("alarms", noted_run, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["round"], r["site"], r["level"]) for r in rows] == [
        (2, "site2", "observation"), (3, "site2", "observation"),
        (3, "university_clinic_b", "alarm"), (4, "site2", "observation"),
    ]  # fmt: skip
    assert AlarmEvidence.model_validate(rows[2]["evidence"]) == EVIDENCE
    assert rows[0]["evidence"] is None
